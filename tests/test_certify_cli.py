"""``vaelens certify`` and ``smooth:`` specs through the command line (docs/method.md section 10)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ("--n", "300", "--n0", "20", "--inputs", "4", "--quiet")


def _script() -> str:
    return shutil.which("vaelens") or str(Path(sys.executable).parent / "vaelens")


def _certify(run: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real console script in a fresh process, nothing pre-imported."""
    return subprocess.run(
        [_script(), "certify", str(run), "--sigma", "0.25", "--eps", "0.05,0.1,1", "--output", "latent,recon",
         "--out", str(out), *SMALL, *extra],
        capture_output=True, text=True, env={**os.environ}, timeout=600,
    )  # fmt: skip


def test_console_script_refuses_a_bad_sigma_in_one_line(digits_run, tmp_path):
    proc = _certify(digits_run, tmp_path / "cert", "--sigma", "0")
    assert proc.returncode == 2 and "sigma" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_console_script_certifies(digits_run, tmp_path):
    out = tmp_path / "cert"
    proc = _certify(digits_run, out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "wrote certificates.csv" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [o["output"] for o in summary["outputs"]] == ["latent", "recon"]
    assert all(o["per_eps"][0]["median_attacked"] is None for o in summary["outputs"])  # not attacked: null


def test_another_config_into_the_same_out_is_refused(run_cli, digits_run, tmp_path):
    assert run_cli("certify", digits_run, "--eps", "0.1", "--out", tmp_path / "c", *SMALL)[0] == 0
    code, _, err = run_cli("certify", digits_run, "--eps", "0.2", "--out", tmp_path / "c", *SMALL)
    assert code == 2 and "--overwrite" in err


@pytest.mark.slow
def test_console_script_writes_the_bracket(digits_run, tmp_path):
    out = tmp_path / "cert"
    proc = _certify(digits_run, out, "--attack", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "bracket.png", "certificates.csv", "summary.json"
    ]  # fmt: skip
    rows = list(csv.DictReader((out / "certificates.csv").read_text().splitlines()))
    assert len(rows) == 4 * 3 * 2  # inputs x eps x outputs
    summary = json.loads((out / "summary.json").read_text())
    by_output = {o["output"]: o for o in summary["outputs"]}
    for o in by_output.values():
        rates = [r["abstain_rate"] for r in o["per_eps"]]
        assert rates[-1] == 1.0 and rates == sorted(rates)  # eps 1 at sigma 0.25 is beyond any certificate
        assert o["per_eps"][0]["exceeded"] == 0
        assert o["per_eps"][0]["median_attacked"] <= o["per_eps"][0]["median_bound"]
    for r in rows:
        if r["abstain"] == "True":
            assert r["bound"] == "nan"
        else:
            assert float(r["attacked"]) <= float(r["bound"])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--sigma", "0"), "sigma"),
        (("--sigma", "-0.5"), "sigma"),
        (("--n0", "300"), "n0"),
        (("--n", "0"), "n (noise samples, --n) must be >= 2"),
        (("--image-size", "0"), "--image-size must be >= 1"),  # was ignored silently
        (("--alpha", "1"), "alpha"),
        (("--alpha", "0"), "alpha"),
        (("--eps", "0"), "eps"),
        (("--eps", "-0.1"), "eps"),
        (("--eps", "nan"), "eps"),
        (("--output", "kl"), "output"),
        (("--output", "latent,"), "--output"),  # one check, SmoothConfig's, for every name given
        (("--inputs", "0"), "--inputs must be >= 1"),  # not "--n", which is certify's sample count
    ],
)
def test_bad_arguments_are_one_line_errors(run_cli, digits_run, tmp_path, args, message):
    code, _, err = run_cli("certify", digits_run, "--out", tmp_path / "c", *SMALL, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()  # refused before anything was written


@pytest.mark.slow
def test_smooth_spec_is_attacked_and_audit_refuses_it(run_cli, digits_run, tmp_path):
    spec = f"smooth:0.25,n=200,n0=10,delta=0.3:{digits_run}"
    code, out, err = run_cli("attack", "--model", spec, "--method", "apgd", "--objective", "latent", "--eps", "0.1",
                             "--steps", "3", "--n", "3", "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("audit", "--model", spec, "--n", "3", "--out", tmp_path / "b", "--quiet")
    assert code == 2 and "no Jacobian" in err
    code, _, err = run_cli("attack", "--model", f"smooth:abc:{digits_run}", "--n", "3", "--out", tmp_path / "d")
    assert code == 2 and "smooth spec" in err
    code, _, err = run_cli("certify", "--model", spec, "--out", tmp_path / "e", *SMALL)
    assert code == 2 and "smooths the model itself" in err


@pytest.mark.slow
def test_compare_puts_a_smoothed_run_beside_its_base(run_cli, digits_run, tmp_path):
    spec = f"smooth:0.25,n=200,n0=10,delta=0.3:{digits_run}"
    code, _, err = run_cli("compare", digits_run, "--model", spec, "--n", "6", "--steps", "2", "--out", tmp_path / "c",
                           "--quiet")  # fmt: skip
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads((tmp_path / "c" / "comparison.json").read_text())["runs"]}
    smoothed = rows[f"smooth0.25:{digits_run.name}"]
    assert smoothed["defence"] == "smoothed (none)" and smoothed["beta"] == rows[digits_run.name]["beta"]
    assert smoothed["rho_median"] == rows[digits_run.name]["rho_median"]  # the base's spectra
    assert smoothed["test_mse"] != rows[digits_run.name]["test_mse"]  # the smoothed model's reconstructions


@pytest.fixture(scope="module")
def frontier_runs(tmp_path_factory):
    """A beta curve of two tiny runs and a noise-trained one (docs/method.md section 10.6)."""
    from vaelens.training import NoiseConfig, train

    from conftest import tiny_config

    root = tmp_path_factory.mktemp("frontier")
    for name, kw in (("b1", {}), ("b4", {"beta": 4.0}), ("noise", {"defence": NoiseConfig(0.25)})):
        train(tiny_config(epochs=1, **kw), root / name, progress=False)
    return root


def _row(name: str, defence: str, beta: float, mse: float, damage: float):
    from vaelens.experiments._compare import RunRow

    return RunRow(name, beta, False, defence, "digits", mse, mse, -mse, 3, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0,
                  damage, damage, damage, damage, damage, damage)  # fmt: skip


def test_the_verdict_places_a_smoothed_model_at_its_own_error_on_attack_measures():
    from vaelens.experiments._compare import verdict

    curve = [_row("b1", "none", 1.0, 0.01, 1.0), _row("b4", "none", 4.0, 0.04, 0.25)]
    smoothed = _row("smooth0.25:noise", "smoothed (noise)", 1.0, 0.02, 0.05)
    out = verdict([*curve, smoothed])
    assert [s.split(": ", 1)[1].split(" 0.05")[0] for s in out[:-1]] == [
        "KL damage of the strongest attack", "reconstruction shift under the strongest attack", "PGD KL damage",
        "EigenAttack KL damage",
    ]  # fmt: skip  # its spectra are its base's: not a point of its own
    assert out[-1].startswith("Against b1 (same beta, no defence)")
    assert "at reconstruction error 0.02 (the smoothed model's own) lies below (more robust than)" in out[0]
    smoothed.strongest_kl = 10.0
    assert "above (less robust than)" in verdict([*curve, smoothed])[0]
    noise = _row("noise", "noise", 1.0, 0.02, 0.05)
    assert verdict([*curve, noise])[0].startswith("noise (beta 1, noise): median rho(G)")


@pytest.mark.slow
def test_noise_trained_and_smoothed_is_a_point_on_the_frontier(frontier_runs, tmp_path):
    from vaelens.experiments import compare_runs, write_comparison
    from vaelens.experiments._compare import verdict

    spec = f"smooth:0.25,n=200,n0=10,delta=0.3:{frontier_runs / 'noise'}"
    runs = [frontier_runs / "b1", frontier_runs / "b4", frontier_runs / "noise", spec]
    comp = compare_runs(runs, n=8, eps=0.5, pgd_steps=2, progress=False)
    b1, b4, noise, smoothed = comp.rows
    assert [r.defence for r in comp.rows] == ["none", "none", "noise", "smoothed (noise)"]
    assert smoothed.test_mse != noise.test_mse  # x is the smoothed model's own reconstruction error
    mine = [s for s in comp.verdict if s.startswith("smooth0.25:noise (beta 1, smoothed (noise))")]
    assert len(mine) == 4 and all("(the smoothed model's own)" in s for s in mine)  # attack measures only
    assert f"at reconstruction error {smoothed.test_mse:.4g}" in mine[0]
    assert any(s.startswith("noise (beta 1, noise): median rho(G)") for s in comp.verdict)
    smoothed.test_mse, smoothed.strongest_kl = (b1.test_mse + b4.test_mse) / 2, 1e-12  # the verdict reads the numbers
    assert "below (more robust than)" in verdict([b1, b4, smoothed])[0]
    smoothed.strongest_kl = 1e12
    assert "above (less robust than)" in verdict([b1, b4, smoothed])[0]
    paths = write_comparison(comp, tmp_path / "cmp")
    assert paths["plot"].stat().st_size > 0


def test_the_report_section_shows_every_finished_bracket(run_cli, digits_run, tmp_path):
    from vaelens.experiments._certified import CERTIFIED, certification_section

    run = tmp_path / "runs" / "digits"
    shutil.copytree(digits_run, run)
    assert certification_section(tmp_path, ["digits"]) is None  # nothing certified: no section
    code, _, err = run_cli("certify", run, "--eps", "0.05,1", "--output", "latent,recon", *SMALL)
    assert code == 0, err
    (run / "certify-killed").mkdir()  # a certification that never finished is not shown
    (run / "certify-killed" / "summary.json").write_text("{}")
    section = certification_section(tmp_path, ["digits", "not-certified"])
    assert section is not None and section.title == CERTIFIED
    rows = section.tables[0].rows
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("digits", "certify", "latent", "0.05"), ("digits", "certify", "latent", "1"),
        ("digits", "certify", "recon", "0.05"), ("digits", "certify", "recon", "1"),
    ]  # fmt: skip
    summary = json.loads((run / "certify" / "summary.json").read_text())
    latent = summary["outputs"][0]["per_eps"][0]
    assert rows[0][6] == f"{latent['median_bound']:.4g}" and rows[0][9] == f"{latent['median_predicted']:.4g}"
    assert rows[0][8] == "-" and rows[0][10] == "-"  # not attacked: no lower side, no gap (the slow test attacks)
    assert rows[1][5] == "100%" and rows[1][6] == "-" and rows[1][8] == "-"  # eps 1 abstains at sigma 0.25
    assert rows[0][7] == "" and rows[2][7] != ""  # RMS per pixel for the reconstruction only
    assert sum("Smoothing costs" in p for p in section.paragraphs) == 2
    assert [f.path.name for f in section.figures] == ["bracket.png"]
