"""vaelens bench: the protocol, the leaderboard's statistics on synthetic rows, one-line errors, and
(slow) the tiny protocol end to end through the console script: train-zoo, bench, resume after a
kill, the page in headless Chromium, and Ray."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaelens._errors import VaelensError
from vaelens.experiments import PROTOCOLS, BenchProtocol, build_leaderboard, get_protocol, run_bench, train_zoo
from vaelens.experiments._bench_protocol import cell, protocol_from_dict
from vaelens.experiments._leaderboard import (
    BEYOND,
    DISAGREE,
    FRONTIER,
    NOT_BEYOND,
    OUTSIDE,
    UNJUDGED,
    headline_cells,
)

TINY = PROTOCOLS["tiny"]


# ---- the protocol ----


def test_protocols_round_trip_through_json():
    for p in PROTOCOLS.values():
        assert protocol_from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_v1_names_its_budgets_attacks_certificate_and_families():
    v1 = get_protocol("v1")
    assert v1.version == "v1" and v1.dataset == "mnist-5k" and len(v1.seeds) == 3
    assert len(v1.l2_budgets) >= 2 and len(v1.linf_budgets) >= 2
    families = v1.families()
    assert {"beta-0.1", "mixup-mean", "mixup-sample", "adversarial", "noise", "smoothed-noise"} <= set(families)
    assert "pythae-VAE" in families and "pythae-AE" in families and len(families) >= 15


@pytest.mark.parametrize(
    "change, message",
    [
        ({"l2_budgets": (0.5,)}, "two L2"),
        ({"betas": (1.0,)}, "two or more distinct betas"),
        ({"seeds": (0, 0)}, "distinct seeds"),
        ({"cert_budgets": (0.3,)}, "among the L2 budgets"),
        ({"pythae_families": ("VAE_IAF",)}, "unknown pythae families"),
        ({"n_test": 0}, "n_test"),
    ],
)
def test_a_bad_protocol_is_refused_in_one_line(change, message):
    with pytest.raises(VaelensError, match=message):
        dataclasses.replace(TINY, **change)


def test_unknown_protocol_is_one_line():
    with pytest.raises(VaelensError, match="unknown benchmark protocol 'v9'; choose one of v1, tiny"):
        get_protocol("v9")


# ---- the leaderboard on synthetic rows ----


def _row(entry: str, seed: int, mse: float, damage: float, source: str = "pythae", defence: str = "none") -> dict:
    row = {"entry": entry, "family": entry, "source": source, "defence": defence, "seed": seed, "beta": math.nan,
           "test_mse": mse, "ms_ssim": 0.9, "train_seconds": 1.0}  # fmt: skip
    for norm, eps in TINY.budgets:
        row[cell("recon_shift", norm, eps)] = damage
        row[cell("latent_l2", norm, eps)] = 1.0
    for eps in TINY.cert_budgets:
        row[cell("cert_bound", "l2", eps)] = 2.0
    for kind in ("stochastic", "fisher", "output", "mean"):
        row[f"rho_{kind}"] = damage
    return row


def _curve(seed: int) -> list[dict]:
    # the beta curve: damage falls from 1 to 0.1 as the error rises from 0.01 to 0.1 (log-log straight)
    return [_row("beta-0.5", seed, 0.01, 1.0, "vaelens"), _row("beta-2", seed, 0.1, 0.1, "vaelens")]


def test_frontier_ratio_is_damage_over_the_beta_curve_at_equal_error():
    rows = _curve(0) + _curve(1) + [_row("good", s, 0.01 * 10**0.5, 10**-0.5 / 2) for s in (0, 1)]
    board = build_leaderboard(TINY, rows)
    good = next(s for s in board.standings if s.entry == "good")
    assert good.frontier_ratio == pytest.approx(0.5)  # the curve gives 10**-0.5 there
    assert good.verdict == BEYOND and good.rank == 1 and not good.extrapolated
    assert {s.verdict for s in board.standings if s.entry.startswith("beta")} == {FRONTIER}


def test_beyond_the_frontier_only_when_every_seed_agrees():
    rows = _curve(0) + _curve(1) + [_row("split", 0, 0.05, 0.01), _row("split", 1, 0.05, 10.0)]
    rows += [_row("above", s, 0.05, 10.0) for s in (0, 1)]
    verdicts = {s.entry: s for s in build_leaderboard(TINY, rows).standings}
    assert verdicts["split"].verdict == DISAGREE and verdicts["split"].ratio_min < 1 < verdicts["split"].ratio_max
    assert verdicts["above"].verdict == NOT_BEYOND


def test_overlapping_seed_ranges_are_stated_as_ties():
    rows = _curve(0) + _curve(1)
    rows += [_row("a", s, 0.05, d) for s, d in ((0, 0.05), (1, 0.1))]
    rows += [_row("b", s, 0.05, d) for s, d in ((0, 0.08), (1, 0.2))]
    rows += [_row("c", s, 0.05, d) for s, d in ((0, 5.0), (1, 6.0))]
    by = {s.entry: s for s in build_leaderboard(TINY, rows).standings}
    assert "b" in by["a"].tied_with and "a" in by["b"].tied_with and "c" not in by["a"].tied_with
    assert by["a"].rank < by["b"].rank < by["c"].rank


def test_without_a_beta_curve_nothing_is_judged():
    board = build_leaderboard(TINY, [_row("x", 0, 0.05, 1.0)])
    assert board.standings[0].verdict == UNJUDGED and math.isnan(board.standings[0].frontier_ratio)


def test_headline_averages_every_budget_of_the_protocol():
    assert headline_cells(TINY) == [cell("recon_shift", n, e) for n, e in TINY.budgets]
    assert len(headline_cells(TINY)) == len(TINY.l2_budgets) + len(TINY.linf_budgets)


# ---- one-line errors ----


def test_bench_errors_are_one_line(run_cli, tmp_path):
    for args, message in [
        (("bench", "--protocol", "v9", "--model", "x"), "unknown benchmark protocol"),
        (("bench", "--protocol", "tiny", "--out", tmp_path / "b"), "nothing to benchmark"),
        (("bench", "--protocol", "tiny", "--zoo", tmp_path / "nozoo", "--out", tmp_path / "b"), "holds no zoo"),
        (("bench", "--protocol", "tiny", "--model", tmp_path / "missing-run", "--out", tmp_path / "b"),
         "no such run directory"),
        (("bench", "--protocol", "tiny", "--model", tmp_path, "--model", tmp_path, "--out", tmp_path / "b"),
         "two entries are named"),
        (("bench", "train-zoo", "--protocol", "tiny", "--families", "pythae-NOPE", "--out", tmp_path / "z"),
         "unknown zoo family pythae-NOPE"),
        (("bench", "train-zoo", "--protocol", "tiny", "--executor", "dask", "--out", tmp_path / "z"),
         "unknown executor"),
        (("bench", "--protocol", "tiny", "--out", tmp_path / "z", "train-zoo", "--families", "noise"),
         "--protocol, --out before train-zoo would be ignored"),
    ]:  # fmt: skip
        code, out, err = run_cli(*args)
        assert code == 2 and message in err and "Traceback" not in out + err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_submitted_model_that_fails_on_the_inputs_is_recorded_not_a_traceback(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text(
        "import torch\n\n\nclass Bad(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.enc, self.dec = torch.nn.Linear(100, 4), torch.nn.Linear(2, 100)\n\n"
        "    def encode(self, x):\n        return self.enc(x.flatten(1)).chunk(2, -1)\n\n"
        "    def decode(self, z):\n        return self.dec(z)\n\n\ndef make():\n    return Bad()\n"
    )
    code, out, err = run_cli("bench", "--protocol", "tiny", "--model", "python:bad.py:make", "--out", "b", "--quiet")
    assert code == 2 and "Traceback" not in out + err, err
    assert "the model fails on the protocol's inputs (RuntimeError" in err and "failed (above)" in err


# ---- the tiny protocol end to end (slow) ----

FAMILIES = "beta-0.5,beta-2,mixup-mean,noise,smoothed-noise,pythae-VAE,pythae-AE"


def _vaelens(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("vaelens") or str(Path(sys.executable).parent / "vaelens")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """The tiny zoo trained and benchmarked through the console script, the bench killed once after
    its second (entry, seed) and run again."""
    root = tmp_path_factory.mktemp("bench")
    zoo, out = root / "zoo", root / "bench"
    proc = _vaelens("bench", "train-zoo", "--protocol", "tiny", "--families", FAMILIES, "--out", zoo, "--quiet")
    assert proc.returncode == 0, proc.stderr
    args = ("bench", "--protocol", "tiny", "--zoo", zoo, "--model", f"mine={zoo / 'beta-2' / 'seed0' / 'run'}",
            "--out", out, "--quiet")  # fmt: skip
    killed = _vaelens(*args, env={"VAELENS_FAULT": "bench-measured@2"})
    assert killed.returncode == -9, killed.stderr
    measured = sorted(out.glob("entries/*/seed*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in measured}
    proc = _vaelens(*args)
    assert proc.returncode == 0, proc.stderr
    return {"zoo": zoo, "out": out, "stamps": stamps, "stdout": proc.stdout}


@pytest.mark.slow
def test_bench_resumes_after_a_kill_without_redoing(tiny_bench):
    assert len(tiny_bench["stamps"]) == 2  # the kill came after two (entry, seed) were saved
    for path, stamp in tiny_bench["stamps"].items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was measured again"
    assert "2 already measured" in tiny_bench["stdout"]


@pytest.mark.slow
def test_leaderboard_files_hold_every_entry_seed_and_the_protocol(tiny_bench):
    out = tiny_bench["out"]
    with open(out / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    entries = {r["entry"] for r in rows}
    assert entries == {*FAMILIES.split(","), "mine"}
    assert len(rows) == len(entries) * len(TINY.seeds)
    assert {r["protocol"] for r in rows} == {"tiny"} and all(r["vaelens_version"] for r in rows)
    for name in (*headline_cells(TINY), "test_mse", "ms_ssim", "rho_output", "frontier_ratio", "train_seconds"):
        assert all(r[name] != "" for r in rows), name
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["protocol"] == TINY.to_dict() | {k: list(v) for k, v in TINY.to_dict().items() if isinstance(v, tuple)}
    assert board["versions"]["vaelens"] and board["comparable_only_with"] == "results under protocol tiny"
    assert {s["entry"] for s in board["standings"]} == entries
    det = [r for r in rows if r["entry"] == "pythae-AE"]
    assert all(r["deterministic"] == "True" and r["rho_stochastic"] in ("", "nan") for r in det)


@pytest.mark.slow
def test_page_in_headless_chromium_loads_sorts_and_shows_every_entry(tiny_bench, tmp_path, headless_chromium):
    page = (tiny_bench["out"] / "index.html").read_text()
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    probe = page.replace(
        "</body>",
        "<script>window.addEventListener('load', () => {"
        " const th = [...document.querySelectorAll('#board th')].find(h => h.textContent === 'entry');"
        " th.click(); th.click();"  # descending by name
        " const names = [...document.querySelectorAll('#board tbody tr')].map(r => r.children[1].textContent);"
        " const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-result', JSON.stringify({names, ok, images: document.images.length,"
        " cards: document.querySelectorAll('.card').length})); });</script></body>",
    )
    test_page = tmp_path / "index.html"
    test_page.write_text(probe)
    dom = headless_chromium("--dump-dom", test_page.as_uri())
    found = re.search(r"data-result=\"([^\"]*)\"", dom.stdout)
    assert found, dom.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    expected = sorted({*FAMILIES.split(","), "mine"}, reverse=True)
    assert result["names"] == expected  # every entry, sorted by the click
    assert result["cards"] == len(expected) and result["ok"] == result["images"] >= len(expected)


@pytest.mark.slow
def test_train_zoo_on_ray_matches_the_local_members(tiny_bench, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "zoo"
    proc = _vaelens("bench", "train-zoo", "--protocol", "tiny", "--families", "beta-0.5", "--executor", "ray",
                    "--out", out, "--quiet", env={"RAY_AUTH_MODE": "disabled"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for seed in TINY.seeds:
        ray_member = json.loads((out / "beta-0.5" / f"seed{seed}" / "member.json").read_text())
        local = json.loads((tiny_bench["zoo"] / "beta-0.5" / f"seed{seed}" / "member.json").read_text())
        assert ray_member["spec"] == local["spec"] and ray_member["parameters"] == local["parameters"]
        a = (out / "beta-0.5" / f"seed{seed}" / "run" / f"model.{TINY.epochs}.safetensors").read_bytes()
        b = (tiny_bench["zoo"] / "beta-0.5" / f"seed{seed}" / "run" / f"model.{TINY.epochs}.safetensors").read_bytes()
        assert a == b  # the same training, bit for bit, on a Ray worker


def test_run_bench_and_train_zoo_refuse_a_directory_of_something_else(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(VaelensError, match="holds no zoo"):
        train_zoo("tiny", tmp_path / "other", progress=False)
    with pytest.raises(VaelensError, match="nothing to benchmark"):
        run_bench("tiny", tmp_path / "b", progress=False)


def test_protocol_is_a_frozen_dataclass():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.n_test = 3  # type: ignore[misc]
    assert isinstance(TINY, BenchProtocol)


def test_rank_agreement_skips_entries_without_the_kind():
    rows = _curve(0) + [_row("x", 0, 0.05, 0.5), _row("y", 0, 0.03, 3.0)]
    for r, rho in zip(rows, (3.0, 1.0, 2.0, math.nan), strict=True):
        r["rho_stochastic"] = rho  # y: a deterministic encoder, no stochastic kind
    agreement = build_leaderboard(TINY, rows).rank_agreement
    assert agreement["output"] == pytest.approx(1.0) and agreement["stochastic"] == pytest.approx(1.0)


def test_train_zoo_skips_finished_members_and_refuses_another_protocol(tmp_path):
    zoo = tmp_path / "zoo"
    for seed in TINY.seeds:  # members finished earlier: their member.json exists
        member = zoo / "beta-0.5" / f"seed{seed}"
        member.mkdir(parents=True)
        record = {"family": "beta-0.5", "seed": seed, "spec": "x", "protocol": "tiny", "source": "vaelens",
                  "beta": 0.5, "defence": "none", "train_seconds": 1.0, "parameters": 10}  # fmt: skip
        (member / "member.json").write_text(json.dumps(record))
    (zoo / "zoo.json").write_text(json.dumps({"protocol": TINY.to_dict()}))
    result = train_zoo("tiny", zoo, families=["beta-0.5"], progress=False)
    assert result.done == [] and result.skipped == ["beta-0.5/seed0", "beta-0.5/seed1"]
    assert [r["spec"] for r in result.records] == ["x", "x"]
    with pytest.raises(VaelensError, match="another protocol"):
        train_zoo("v1", zoo, families=["beta-0.1"], progress=False)


def test_an_entry_outside_the_curves_range_is_not_judged():
    # a collapsed model: blurrier than every beta run and barely moved by any attack
    rows = _curve(0) + _curve(1) + [_row("blurry", s, 0.5, 1e-6) for s in (0, 1)]
    blurry = next(s for s in build_leaderboard(TINY, rows).standings if s.entry == "blurry")
    assert blurry.extrapolated and blurry.verdict == OUTSIDE and blurry.frontier_ratio < 1
    assert blurry.rank == 3 and blurry.tied_with == ()  # after the judged entries, whatever its ratio
