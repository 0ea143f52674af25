import json
import shutil
import subprocess
import sys

import pytest


def test_train_and_info(run_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        "train",
        "--dataset",
        "digits",
        "--latent-dim",
        "2",
        "--hidden",
        "16",
        "--epochs",
        "1",
        "--beta",
        "2",
        "--seed",
        "3",
        "--out",
        out,
        "--quiet",
    )
    assert code == 0, stdout
    assert "test_recon" in stdout
    code, stdout, _ = run_cli("info", out, "--json")
    assert code == 0
    info = json.loads(stdout)
    assert info["config"]["beta"] == 2.0 and info["config"]["seed"] == 3
    assert info["config"]["model"]["input_shape"] == [1, 8, 8]
    assert info["epochs_done"] == 1 and info["final"]["test_recon"] > 0
    code, stdout, _ = run_cli("info", out)
    assert code == 0 and "final test_recon" in stdout


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--dataset", "imagenet", "--out", "{tmp}/x"], "unknown data set"),
        (["train", "--dataset", "digits", "--beta", "-1", "--out", "{tmp}/x"], "beta must be >= 0"),
        (["train", "--dataset", "digits", "--model", "vit", "--out", "{tmp}/x"], "unknown model"),
        (["train", "--dataset", "digits", "--hidden", "a,b", "--out", "{tmp}/x"], "--hidden"),
        (["info", "{tmp}/missing"], "does not exist"),
    ],
)
def test_cli_errors_are_one_line(run_cli, tmp_path, args, match):
    code, stdout, stderr = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2
    assert match in stderr
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1


def test_out_dir_holding_another_run(run_cli, digits_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    code, _, stderr = run_cli("train", "--dataset", "digits", "--beta", "5", "--out", run, "--quiet")
    assert code == 2 and "holds a different run" in stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing lost


def test_usage_error_exits_nonzero(run_cli):
    code, _, _ = run_cli("train", "--no-such-flag")
    assert code != 0


def test_console_script_runs_without_traceback(tmp_path):
    exe = shutil.which("vaelens") or str(__import__("pathlib").Path(sys.executable).parent / "vaelens")
    proc = subprocess.run([exe, "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_runs(run_cli, tmp_path):
    code, stdout, _ = run_cli("demo", "--out", tmp_path / "demo", "--epochs", "1", "--n", "20")
    assert code == 0
    assert (tmp_path / "demo" / "report.html").is_file() and "report:" in stdout
    runs = sorted(p.name for p in (tmp_path / "demo" / "runs").iterdir())
    assert runs == [
        "mnist-5k_mlp_beta0.1_seed0",
        "mnist-5k_mlp_beta1_mixup_seed0",
        "mnist-5k_mlp_beta1_seed0",
        "mnist-5k_mlp_beta4_seed0",
    ]
    assert len((tmp_path / "demo" / "results.csv").read_text().splitlines()) == 5
