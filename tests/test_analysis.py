"""The report's analysis on synthetic rows whose answers are known: every sentence must be true."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaelens.experiments import ResultRow, against_curve, aggregate, damage_column
from vaelens.experiments._analysis import (
    beta_curves,
    mixup_findings,
    mixup_sentences,
    over_seeds,
    probe_picks,
    score_validity,
    spearman,
    trend_findings,
    trend_sentences,
)
from vaelens.experiments._schema import DAMAGE_MEASURES

EPS = (0.5, 1.0)


def row(beta, seed=0, mixup=False, rho=1.0, mse=0.05, entropy=1.0, dataset="mnist-5k", model="mlp", kl=1.0):
    methods = ("eigen", "pgd", "apgd", "random", "strongest")
    damage = {(m, q, e): kl * e for m in methods for q in DAMAGE_MEASURES for e in EPS}
    return ResultRow(
        run=f"{dataset}_{model}_b{beta}_{'mix' if mixup else ''}{seed}", dataset=dataset, model=model, beta=beta,
        defence="mixup" if mixup else "none", seed=seed, epochs=1, test_recon=1.0, test_mse=mse, test_elbo=-1.0,
        train_kl=1.0, active_units=3, rho_mean=rho, rho_median=rho, rho_std=0.0, rho_q25=rho, rho_q75=rho,
        entropy_mean=entropy, entropy_median=entropy, rho_fisher_median=rho, rho_output_median=rho, damage=damage,
    )  # fmt: skip


def test_result_row_round_trips_through_its_columns():
    r = row(0.5, seed=3, mixup=True, rho=2.5)
    rec = r.record()
    assert list(rec) == ResultRow.columns(EPS)
    assert rec[damage_column("pgd", "kl", 1.0)] == 1.0 and "pgd_kl@1" in rec
    as_strings = {k: str(v) for k, v in rec.items()}  # as read back from results.csv
    assert ResultRow.from_record(as_strings, EPS) == r
    assert ResultRow.from_record(rec, EPS) == r


def test_aggregate_takes_the_median_over_seeds_with_its_spread():
    rows = [row(1.0, seed=s, rho=v, mse=m) for s, v, m in ((0, 1.0, 0.1), (1, 2.0, 0.2), (2, 6.0, 0.3), (3, 3.0, 0.4))]
    rows.append(row(2.0, seed=0, rho=9.0))
    (p1, p2) = aggregate(rows)
    assert (p1.beta, p1.n_seeds, p2.n_seeds) == (1.0, 4, 1)
    assert p1.rho_median == 2.5  # numpy's median of an even count: the mean of the middle two
    assert (p1.rho_median_min, p1.rho_median_max) == (1.0, 6.0)
    assert p1.test_mse == pytest.approx(0.25)
    assert p1.record()["n_seeds"] == 4 and set(p1.record()) >= {"rho_median_min", "entropy_median", "mixup"}


def test_trend_uses_seed_aggregates_not_a_mix_of_seeds():
    # rho falls with beta on the medians over seeds, but one wild seed per beta would break a
    # correlation computed over all runs pooled.
    rows = []
    for beta, rho in ((0.1, 10.0), (1.0, 5.0), (10.0, 1.0)):
        rows += [row(beta, seed=0, rho=rho), row(beta, seed=1, rho=rho * 1.1), row(beta, seed=2, rho=100 / rho)]
    curve = beta_curves(aggregate(rows))[("mnist-5k", "mlp")]
    assert [p.beta for p in curve] == [0.1, 1.0, 10.0] and {p.n_seeds for p in curve} == {3}
    assert spearman([p.beta for p in curve], [p.rho_median for p in curve]) == pytest.approx(-1.0)
    sentences = trend_sentences("mnist-5k / mlp", curve)
    assert "over 3 betas (3 seeds each" in sentences[0] and "median rho(G) -1.00" in sentences[0]
    assert sentences[1] == "On mnist-5k / mlp, local robustness rises as beta grows (rho(G) is a fragility)."
    flat = trend_sentences("x", beta_curves(aggregate([row(b, rho=1.0) for b in (0.1, 1, 10)]))[("mnist-5k", "mlp")])
    assert "+nan" in flat[0] and len(flat) == 1  # a constant curve claims no trend


def test_against_curve_interpolates_in_log_log_and_flags_extrapolation():
    pos = against_curve([0.1, 0.3], [1.0, 100.0], (0.1 * 0.3) ** 0.5, 5.0)
    assert pos.expected == pytest.approx(10.0)  # halfway in log x: the geometric mean in y
    assert pos.ratio == pytest.approx(0.5) and pos.below and not pos.extrapolated
    out = against_curve([0.1, 0.3], [1.0, 100.0], 0.5, 500.0)
    assert out.extrapolated and out.expected == pytest.approx(100.0) and not out.below


def test_mixup_verdict_on_known_answers():
    curve = [row(0.1, mse=0.1, rho=10.0), row(1.0, mse=0.2, rho=4.0), row(10.0, mse=0.4, rho=1.0)]
    better = [row(1.0, seed=s, mixup=True, mse=0.2, rho=v) for s, v in ((0, 1.0), (1, 2.0))]
    (sentence,) = mixup_sentences(aggregate(curve + better))
    assert "below (more robust than) the beta curve (4 there, ratio 0.375)" in sentence
    assert "all 2 seeds agree" in sentence and "extrapolated" not in sentence
    split = [row(1.0, seed=0, mixup=True, mse=0.2, rho=1.0), row(1.0, seed=1, mixup=True, mse=0.2, rho=9.0)]
    (sentence,) = mixup_sentences(aggregate(curve + split))
    assert "above (less robust than)" in sentence and "1 of 2 seeds lie below" in sentence
    far = [row(1.0, mixup=True, mse=0.9, rho=0.5)]  # blurrier than every beta run: no side named
    (sentence,) = mixup_sentences(aggregate(curve + far))
    assert "not judged against the beta curve" in sentence and "below (more" not in sentence
    lonely = mixup_sentences(aggregate([curve[0], *better]))
    assert "at least two betas" in lonely[0]


def test_findings_carry_their_kind_and_the_numbers_their_text_states():
    curve = [row(0.1, mse=0.1, rho=10.0), row(1.0, mse=0.2, rho=4.0), row(10.0, mse=0.4, rho=1.0)]
    better = [row(1.0, seed=s, mixup=True, mse=0.2, rho=v) for s, v in ((0, 1.0), (1, 2.0))]
    points = aggregate(curve + better)
    trend, direction = trend_findings("mnist-5k / mlp", beta_curves(points)[("mnist-5k", "mlp")])
    assert (trend.kind, direction.kind, trend.subject) == ("beta-trend", "trend-direction", "mnist-5k / mlp")
    assert (
        trend.numbers["rho_spearman"] == pytest.approx(-1.0) and f"{trend.numbers['rho_spearman']:+.2f}" in trend.text
    )
    (mixup,) = mixup_findings(points)
    assert mixup.kind == "mixup" and mixup.numbers["ratio"] == pytest.approx(0.375)
    assert f"ratio {mixup.numbers['ratio']:.3g}" in mixup.text and mixup.numbers["seeds_below"] == 2
    (lonely,) = mixup_findings(aggregate([curve[0], *better]))
    assert lonely.kind == "unjudged" and lonely.numbers["betas"] == 1


def test_over_seeds_is_the_median_and_range_of_a_configuration():
    (p,) = aggregate([row(1.0, seed=s, rho=v) for s, v in ((0, 1.0), (1, 2.0), (2, 6.0), (3, 3.0))])
    assert over_seeds(p, lambda r: r.rho_median) == (2.5, 1.0, 6.0)


def test_probe_picks_stay_within_their_group():
    rows = [row(b, dataset=d, model=m) for d in ("a", "b") for m in ("mlp", "conv") for b in (0.1, 0.5, 1, 4, 9)]
    rows += [row(1.0, mixup=True, dataset="a", model="mlp")]
    picks = probe_picks(beta_curves(aggregate(rows)))
    assert set(picks) == {("a", "mlp"), ("a", "conv"), ("b", "mlp"), ("b", "conv")}
    for (dataset, model), points in picks.items():
        assert [p.beta for p in points] == [0.1, 1.0, 9.0]
        assert all((p.dataset, p.model, p.mixup) == (dataset, model, False) for p in points)


def test_score_validity_finds_the_predictive_score():
    rng = np.random.default_rng(0)
    samples = {}
    for i in range(4):
        damage = rng.random(50) * (i + 1)
        samples[f"run{i}"] = {"good": damage * 2 + 0.01, "noise": rng.random(50), "pgd_kl@1": damage}
    v = score_validity(samples, {"good score": "good", "noise": "noise"}, "pgd_kl@1")
    assert v.within.shape == (4, 2) and np.allclose(v.within[:, 0], 1.0)
    assert v.across["good score"] == pytest.approx(1.0)
    assert v.sentence().startswith(
        "Within a model, good score predicts which inputs the strongest attack damages most (mean Spearman 1.00)"
    )
    assert "across models, good score best tracks" in v.sentence() and "over 4 runs" in v.sentence()
    assert math.isnan(spearman([1, 2], [3, 4]))
