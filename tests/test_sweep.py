import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import vaelens
from vaelens.experiments import SweepConfig, parse_betas, run_sweep, write_report

TINY = [
    "--dataset", "digits", "--betas", "0.5,2", "--mixup", "both", "--epochs", "1", "--n", "16",
    "--eps", "0.5,1", "--steps", "3", "--latent-dim", "3", "--seeds", "0,1",
]  # fmt: skip


def test_parse_betas():
    grid = parse_betas("logspace:-2:1:50")
    assert len(grid) == 50 and grid[0] == pytest.approx(0.01) and grid[-1] == pytest.approx(10.0)
    assert parse_betas("0.5, 2") == [0.5, 2.0]
    assert parse_betas("linspace:1:3:3") == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("logspace:-2:1", "malformed beta range"),
        ("logspace:a:b:c", "malformed beta range"),
        ("logspace:-2:1:0", "malformed beta range"),
        ("", "empty"),
        ("1,x", "--betas takes"),
        ("-1,2", ">= 0"),
    ],
)
def test_bad_beta_grids(spec, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        parse_betas(spec)


def test_sweep_config_file(tmp_path):
    good = tmp_path / "s.toml"
    good.write_text('[sweep]\ndatasets = ["digits"]\nbetas = "logspace:-1:0:3"\nmixup = "both"\nseeds = [0, 1]\n')
    config = SweepConfig.from_file(good)
    assert len(config.units()) == 3 * 2 * 2
    bad = tmp_path / "bad.toml"
    bad.write_text('datasets = ["digits"]\nbeta = 1\n')
    with pytest.raises(vaelens.VaelensError, match=r"unknown sweep config keys \['beta'\]"):
        SweepConfig.from_file(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("datasets = [")
    with pytest.raises(vaelens.VaelensError, match="not valid TOML"):
        SweepConfig.from_file(broken)
    with pytest.raises(vaelens.VaelensError, match="does not exist"):
        SweepConfig.from_file(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"betas": []}, "empty"),
        ({"mixup": "sometimes"}, "mixup must be"),
        ({"models": ["vit"]}, "unknown model"),
        ({"eps": [0]}, "eps must be > 0"),
        ({"seeds": []}, "seeds list is empty"),
    ],
)
def test_bad_sweep_configs(kwargs, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        SweepConfig.from_dict(kwargs)


def test_mixup_betas_restricts_units():
    units = SweepConfig(betas=(0.1, 1.0, 4.0), mixup="both", mixup_betas=(1.0,)).units()
    assert [(u.beta, u.defence == "mixup") for u in units] == [(0.1, False), (1.0, False), (1.0, True), (4.0, False)]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    from vaelens.cli import main

    out = tmp_path_factory.mktemp("sweep") / "s"
    argv = sys.argv
    sys.argv = ["vaelens", "sweep", *TINY, "--out", str(out), "--quiet"]
    try:
        main()
    except SystemExit as e:
        assert not e.code
    finally:
        sys.argv = argv
    return out


@pytest.mark.slow
def test_tiny_sweep_writes_every_file(tiny_sweep):
    assert (tiny_sweep / "sweep.json").is_file()
    with open(tiny_sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert (
        len(rows) == 8 and {r["mixup"] for r in rows} == {"True", "False"} and {r["seed"] for r in rows} == {"0", "1"}
    )
    for key in ("test_recon", "test_elbo", "active_units", "rho_median", "rho_q75", "entropy_median",
                "eigen_kl@0.5", "pgd_kl@1", "apgd_kl@1", "strongest_kl@1", "strongest_recon_shift@0.5",
                "random_recon_shift@1"):  # fmt: skip
        assert key in rows[0], key
    for row in rows:
        run = tiny_sweep / "runs" / row["run"]
        for name in (
            "result.json",
            "samples.csv",
            "model.1.safetensors",
            "audit/summary.json",
            "audit/probe.csv",
            "attack-eigen/damage.csv",
            "attack-pgd/adversarial_grid.png",
            "attack-random/summary.json",
        ):
            assert (run / name).is_file(), f"{row['run']}/{name}"
        with open(run / "samples.csv") as f:
            assert len(list(csv.DictReader(f))) == 16


@pytest.mark.slow
def test_report_contains_every_figure(tiny_sweep):
    path = write_report(tiny_sweep)
    page = path.read_text()
    pngs = sorted((tiny_sweep / "report").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"rho_entropy_vs_beta", "mixup", "damage_vs_eps", "score_validity"} <= names
    assert any(n.startswith("rho_hist_") for n in names) and any(n.startswith("probe_") for n in names)
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(images) >= len(pngs) + 1  # every figure plus an adversarial grid
    assert "Spearman" in page and "predicts which inputs the strongest attack damages most" in page
    assert "src='http" not in page and 'src="http' not in page and 'href="http' not in page  # self-contained
    assert "released numbers" not in page  # digits is not MNIST: no reference comparison


@pytest.mark.slow
def test_report_in_headless_chromium(tiny_sweep, tmp_path, headless_chromium):
    page = write_report(tiny_sweep).read_text()
    probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load', () => { const ok = [...document.images]"
        ".filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-loaded', ok + '/' + document.images.length); });</script></body>",
    )
    test_page = tmp_path / "report.html"
    test_page.write_text(probe)
    dom = headless_chromium("--dump-dom", test_page.as_uri())
    loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom.stdout)
    assert loaded, dom.stderr[-2000:]
    assert int(loaded.group(1)) == int(loaded.group(2)) > 5
    shot = tmp_path / "shot.png"
    headless_chromium(f"--screenshot={shot}", "--window-size=1200,2400", test_page.as_uri())
    from PIL import Image, ImageStat

    with Image.open(shot) as im:
        stat = ImageStat.Stat(im.convert("L"))
    assert stat.stddev[0] > 10, "the screenshot is blank"


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_redoing(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", "--dataset", "digits", "--betas", "0.5,1,2", "--epochs", "1", "--n", "12", "--eps", "0.5",
            "--steps", "2", "--latent-dim", "3", "--out", str(out), "--quiet"]  # fmt: skip
    exe = shutil.which("vaelens") or str(Path(sys.executable).parent / "vaelens")
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    deadline = time.time() + 300
    first = None
    while time.time() < deadline and proc.poll() is None:
        done = list((out / "runs").glob("*/result.json")) if (out / "runs").exists() else []
        if done:
            first = done[0]
            break
        time.sleep(0.2)
    assert first is not None, log.read_text()[-2000:] if proc.poll() is not None else "timed out"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stamp = first.stat().st_mtime_ns
    assert not (out / "results.csv").exists()
    result = run_sweep(SweepConfig.from_dict({
        "datasets": ["digits"], "betas": [0.5, 1.0, 2.0], "epochs": 1, "n": 12, "eps": [0.5], "pgd_steps": 2,
        "latent_dim": 3,
    }), out, progress=False)  # fmt: skip
    assert first.stat().st_mtime_ns == stamp  # the finished run was not redone
    with open(out / "results.csv") as f:
        runs = [r["run"] for r in csv.DictReader(f)]
    assert len(runs) == 3 == len(set(runs)) == len(result.rows)


def test_a_different_sweep_in_the_same_directory_is_refused(tmp_path):
    (tmp_path / "sweep.json").write_text('{"datasets": ["digits"]}')
    with pytest.raises(vaelens.VaelensError, match="holds a different sweep"):
        run_sweep(SweepConfig(datasets=("digits",)), tmp_path, progress=False)


@pytest.mark.parametrize(
    "args, match",
    [
        (["--betas", "logspace:1:2"], "malformed beta range"),
        (["--mixup", "maybe"], "mixup must be"),
        (["--preset", "huge"], "unknown preset"),
        (["--config", "/no/such.toml"], "does not exist"),
    ],
)
def test_cli_sweep_errors(run_cli, tmp_path, args, match):
    code, stdout, stderr = run_cli("sweep", "--out", tmp_path / "s", "--quiet", *args)
    assert code == 2 and match in stderr and "Traceback" not in stdout + stderr


def test_cli_report_without_sweep(run_cli, tmp_path):
    code, _, stderr = run_cli("report", tmp_path)
    assert code == 2 and "no results.csv" in stderr


@pytest.mark.slow
def test_process_pool_equals_sequential_row_by_row(tmp_path):
    config = SweepConfig.from_dict({
        "datasets": ["digits"], "betas": [0.5, 2.0], "epochs": 1, "n": 8, "eps": [0.5], "pgd_steps": 2,
        "latent_dim": 3, "probe_n": 4,
    })  # fmt: skip
    pooled = run_sweep(config, tmp_path / "pool", jobs=2, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the pool's workers do, so that reductions run in the same order
    try:
        sequential = run_sweep(config, tmp_path / "seq", jobs=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [r.beta for r in pooled.rows] == [0.5, 2.0]
    assert [r.record() for r in pooled.rows] == [r.record() for r in sequential.rows]
    assert (tmp_path / "pool" / "results.csv").read_text() == (tmp_path / "seq" / "results.csv").read_text()
    assert all((tmp_path / "pool" / "runs" / r.run / "result.json").is_file() for r in pooled.rows)


def test_unit_and_compare_feed_a_float64_model_float32_inputs(tmp_path, monkeypatch):
    """Every input reaches the model through prepare_inputs: a float64 model fed float32 data fails
    exactly as a CUDA model fed CPU data would, anywhere that step is skipped."""
    from vaelens.experiments import Unit, _runs, compare_runs, run_unit
    from vaelens.models import build_model
    from vaelens.training import _trainer

    def double(config):
        return build_model(config).double()

    monkeypatch.setattr(_trainer, "build_model", double)
    monkeypatch.setattr(_runs, "build_model", double)
    sweep = SweepConfig.from_dict({
        "datasets": ["digits"], "betas": [1.0], "epochs": 1, "n": 8, "eps": [0.5], "pgd_steps": 2,
        "latent_dim": 3, "probe_n": 4,
    })  # fmt: skip
    unit = Unit("digits", "mlp", 1.0, "none", 0)
    row = run_unit(sweep, unit, tmp_path / "s")
    run = tmp_path / "s" / "runs" / unit.name
    assert next(vaelens.load(run).parameters()).dtype == torch.float64
    assert all(np.isfinite(v) for v in row.record().values() if isinstance(v, float))
    comp = compare_runs([run, run], n=8, eps=0.5, pgd_steps=2, progress=False)
    assert comp.rows[0].test_mse == pytest.approx(row.test_mse)


@pytest.mark.slow
def test_report_aggregates_seeds(tiny_sweep):
    write_report(tiny_sweep)
    with open(tiny_sweep / "report" / "trend.csv") as f:
        trend = list(csv.DictReader(f))
    assert list(trend[0]) == ["dataset", "model", "beta", "mixup", "n_seeds", "rho_median", "rho_median_min",
                              "rho_median_max", "entropy_median", "test_mse", "defence", "epochs"]  # fmt: skip
    with open(tiny_sweep / "results.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(trend) == 4 and len(runs) == 8 and {t["n_seeds"] for t in trend} == {"2"}
    for t in trend:
        mine = [float(r["rho_median"]) for r in runs if (r["beta"], r["mixup"]) == (t["beta"], t["mixup"])]
        assert float(t["rho_median"]) == pytest.approx(np.median(mine))
        assert float(t["rho_median_min"]) == min(mine) and float(t["rho_median_max"]) == max(mine)
    page = (tiny_sweep / "report.html").read_text()
    assert "2 seeds each, medians over seeds" in page and (
        "all 2 seeds agree" in page or "of 2 seeds lie below" in page
    )


def test_a_sweep_started_on_another_device_resumes(tmp_path):
    """Where a unit runs is not part of its identity: a sweep begun on a GPU box finishes here."""
    settings = {"datasets": ["digits"], "betas": [1.0], "epochs": 1, "n": 4, "eps": [0.5], "pgd_steps": 2,
                "latent_dim": 2, "probe_n": 2}  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(SweepConfig.from_dict({**settings, "device": "cuda"}).to_dict()))
    result = run_sweep(SweepConfig.from_dict({**settings, "device": "cpu"}), tmp_path, progress=False)
    assert len(result.rows) == 1 and result.outcome.counts()["done"] == 1
    with pytest.raises(vaelens.VaelensError, match="differs in epochs"):
        run_sweep(SweepConfig.from_dict({**settings, "epochs": 2}), tmp_path, progress=False)


@pytest.mark.slow
def test_the_headline_damage_is_the_per_input_best_of_the_ensemble(tiny_sweep):
    from vaelens.experiments._schema import read_samples

    for run in (tiny_sweep / "runs").iterdir():
        s = read_samples(run / "samples.csv")
        for e in ("0.5", "1"):
            members = np.stack([s[f"{m}_kl@{e}"] for m in ("eigen", "pgd", "apgd")])
            assert np.array_equal(s[f"strongest_kl@{e}"], members.max(0))
            winner = members.argmax(0)
            shifts = np.stack([s[f"{m}_recon_shift@{e}"] for m in ("eigen", "pgd", "apgd")])
            assert np.array_equal(s[f"strongest_recon_shift@{e}"], shifts[winner, np.arange(len(winner))])
            assert (s[f"strongest_kl@{e}"] >= s[f"pgd_kl@{e}"]).all()


@pytest.mark.slow
def test_report_shows_the_bracket_of_a_certified_run(tiny_sweep, run_cli, tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    run = sorted((sweep / "runs").iterdir())[0]
    code, _, err = run_cli("certify", run, "--sigma", "0.25", "--eps", "0.05", "--n", "300", "--n0", "20",
                           "--inputs", "3", "--attack", "--steps", "1", "--quiet")  # fmt: skip
    assert code == 0, err
    page = write_report(sweep).read_text()
    assert "Certified robustness: the bracket" in page and "strongest attack (lower)" in page
    attacked = json.loads((run / "certify" / "summary.json").read_text())["outputs"][0]["per_eps"][0]["median_attacked"]
    assert attacked is not None and f"<td>{attacked:.4g}</td>" in page
