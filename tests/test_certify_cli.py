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
        (("--alpha", "1"), "alpha"),
        (("--alpha", "0"), "alpha"),
        (("--eps", "0"), "eps"),
        (("--eps", "-0.1"), "eps"),
        (("--eps", "nan"), "eps"),
        (("--output", "kl"), "output"),
        (("--output", "latent,"), "--output"),  # one check, SmoothConfig's, for every name given
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
