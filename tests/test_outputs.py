"""Output directories belong to one command; results are written as one set; workers die with
their sweep; Ctrl-C says what was saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vaelens
from vaelens._outputs import MARKER, claim_output, finish_output, is_complete, released_if_refused

EXE = str(Path(sys.executable).parent / "vaelens")


def test_attack_refuses_an_audit_directory(run_cli, digits_run, tmp_path):
    audit_dir = tmp_path / "audit"
    code, _, stderr = run_cli("audit", digits_run, "--n", "8", "--probe-n", "0", "--out", audit_dir, "--quiet")
    assert code == 0, stderr
    before = {p.name: p.read_bytes() for p in audit_dir.iterdir()}
    code, stdout, stderr = run_cli("attack", digits_run, "--n", "8", "--steps", "2", "--out", audit_dir, "--quiet")
    assert code == 2 and "holds the output of `vaelens audit`" in stderr and "--overwrite" in stderr
    assert "Traceback" not in stderr + stdout
    assert {p.name: p.read_bytes() for p in audit_dir.iterdir()} == before  # nothing lost
    code, _, stderr = run_cli("attack", digits_run, "--n", "8", "--steps", "2", "--out", audit_dir, "--quiet",
                              "--overwrite")  # fmt: skip
    assert code == 0, stderr
    names = {p.name for p in audit_dir.iterdir()}
    assert "damage.csv" in names and "scores.csv" not in names  # the audit's files were replaced
    assert json.loads((audit_dir / MARKER).read_text())["command"] == "attack"


def test_same_command_other_config_is_refused_and_same_config_repeats(run_cli, digits_run, tmp_path):
    out = tmp_path / "a"
    args = ["attack", digits_run, "--n", "8", "--steps", "2", "--out", out, "--quiet"]
    assert run_cli(*args)[0] == 0
    assert run_cli(*args)[0] == 0  # the same command again rewrites its own result
    code, _, stderr = run_cli(*args, "--eps", "0.5")
    assert code == 2 and "`vaelens attack` with another config" in stderr


def test_out_is_checked_before_any_computation(run_cli, digits_run, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, match in ((afile, "is a file, not a directory"), (afile / "below", "lies below")):
        code, stdout, stderr = run_cli("audit", digits_run, "--out", out, "--quiet")
        assert code == 2 and match in stderr and "Traceback" not in stdout + stderr
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, stderr = run_cli("audit", digits_run, "--out", foreign, "--quiet")
    assert code == 2 and "not empty and was not written by `vaelens audit`" in stderr
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_half_written_result_never_looks_finished(tmp_path):
    out = claim_output(tmp_path / "r", "attack", {"eps": [1.0]})
    (out / "damage.csv").write_text("partial")
    assert not is_complete(out, "attack")  # what a sweep sees after a crash mid-write
    finish_output(out, ["damage.csv"])
    assert is_complete(out, "attack") and not is_complete(out, "audit")


@pytest.mark.slow
def test_sweep_workers_die_with_a_killed_parent(tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [EXE, "sweep", "--dataset", "digits", "--betas", "0.5,1,2,4", "--epochs", "30", "--n", "8", "--eps", "0.5",
         "--steps", "2", "--latent-dim", "3", "--jobs", "2", "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = _children(proc.pid)
    assert len(workers) >= 2, "the pool did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), "a worker outlived its sweep"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(p) for p in out.split()]
    return [k for k in kids if "multiprocessing" in Path(f"/proc/{k}/cmdline").read_text(errors="ignore")
            and "resource_tracker" not in Path(f"/proc/{k}/cmdline").read_text(errors="ignore")]  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_second_writer_of_a_unit_is_refused(tmp_path):
    from vaelens.experiments._sweep import unit_lock

    run_dir = tmp_path / "runs" / "u"
    with unit_lock(run_dir):
        code = (
            "import sys; from pathlib import Path; from vaelens.experiments._sweep import unit_lock\n"
            "with unit_lock(Path(sys.argv[1])): pass"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True)
        assert proc.returncode != 0 and "is being written by another vaelens process" in proc.stderr
    with unit_lock(run_dir):  # released when its holder lets go
        pass


@pytest.mark.slow
def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [EXE, "train", "--dataset", "digits", "--epochs", "400", "--hidden", "32,16", "--latent-dim", "3",
         "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background CI shell ignores SIGINT
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "metrics.csv").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: ") and "run the same command again" in lines[0]
    assert "Traceback" not in stdout + stderr
    vaelens.training.read_config(out)  # the run directory is intact
    assert os.path.isdir(out)


def _unshare_available() -> bool:
    import shutil as _shutil

    if _shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(
    not _unshare_available(), reason="needs unshare -m (a mount namespace) to mount a tmpfs"
)


def _in_small_fs(tmp_path: Path, options: str, command: str) -> subprocess.CompletedProcess:
    """Run a shell command with a fresh tmpfs (mount options as given) at tmp_path/fs, privately."""
    fs = tmp_path / "fs"
    fs.mkdir()
    script = f"mount -t tmpfs -o {options} tmpfs {fs} && {command}"
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@needs_unshare
def test_full_disk_is_one_line(tmp_path):
    proc = _in_small_fs(tmp_path, "size=48k", f"{EXE} train --dataset digits --hidden 64,32 --latent-dim 3 "
                        f"--epochs 2 --out {tmp_path / 'fs' / 'run'} --quiet")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "the disk is full" in lines[0] and "Traceback" not in proc.stderr


@needs_unshare
def test_read_only_output_is_refused_before_computing(tmp_path, digits_run):
    proc = _in_small_fs(tmp_path, "size=1m,ro", f"{EXE} audit {digits_run} --n 4 --out {tmp_path / 'fs' / 'a'} --quiet")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ("read-only" in lines[0] or "permission denied" in lines[0]), lines
    assert "Traceback" not in proc.stderr


def test_a_second_trainer_of_a_run_is_refused(tmp_path):
    from vaelens.training._rundir import run_lock

    from conftest import tiny_config

    run = tmp_path / "r"
    run.mkdir()
    with run_lock(run):  # another process holds the run
        with pytest.raises(vaelens.VaelensError, match="is being trained by another vaelens process"):
            vaelens.train(tiny_config(), run, progress=False)
    vaelens.train(tiny_config(), run, progress=False)  # free again


def test_a_preset_with_a_config_file_keeps_what_the_file_does_not_set(tmp_path):
    from vaelens.experiments import SweepConfig

    toml = tmp_path / "cluster.toml"
    toml.write_text('device = "cpu"\nepochs = 3\n')
    config = SweepConfig.resolve("paper", toml)
    assert config.datasets == ("mnist", "fashion-mnist", "cifar10", "celeba") and len(config.betas) == 50
    assert config.epochs == 3 and config.n == 3072


def test_a_sweep_never_takes_a_foreign_result_for_its_own(tmp_path, run_cli):
    """A stage directory written by `vaelens audit` with other settings is not the sweep's audit."""
    args = ["sweep", "--dataset", "digits", "--betas", "1", "--epochs", "1", "--n", "6", "--eps", "0.5",
            "--steps", "2", "--latent-dim", "2", "--out", tmp_path / "s", "--quiet"]  # fmt: skip
    assert run_cli(*args)[0] == 0
    run = tmp_path / "s" / "runs" / "digits_mlp_beta1_seed0"
    (run / "result.json").unlink()  # as if the sweep had been interrupted before its last step
    code, _, stderr = run_cli("audit", run, "--n", "4", "--probe-n", "0", "--overwrite", "--quiet")
    assert code == 0, stderr
    code, stdout, stderr = run_cli(*args)
    assert code == 2 and "holds the output of `vaelens audit` with another config" in stderr
    assert "Traceback" not in stdout + stderr


def test_ray_with_cuda_needs_gpus_per_unit(tmp_path):
    from vaelens.experiments import RayOptions, SweepConfig, run_sweep

    with pytest.raises(vaelens.VaelensError, match="pass --unit-gpus"):
        run_sweep(SweepConfig(datasets=("digits",), device="cuda"), tmp_path / "s", executor="ray", ray=RayOptions())


@pytest.mark.parametrize("marker", [MARKER, "zoo.json"])
def test_a_refused_claim_is_released_and_only_its_own(tmp_path, marker):
    from vaelens import VaelensError

    def refused_after_claiming(out: Path) -> None:
        with pytest.raises(VaelensError), released_if_refused(out, marker):
            out.mkdir(exist_ok=True)
            (out / marker).write_text("{}")
            raise VaelensError("refused")

    refused_after_claiming(tmp_path / "new")
    assert not (tmp_path / "new").exists()  # the folder the claim made goes
    (tmp_path / "mine").mkdir()
    refused_after_claiming(tmp_path / "mine")
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())  # the user's stays, empty
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / marker).write_text('{"earlier": true}')
    refused_after_claiming(tmp_path / "old")
    assert (tmp_path / "old" / marker).exists()  # a claim made before this block is not this block's to release
