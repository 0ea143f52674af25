"""The robustness-reconstruction frontier (docs/method.md section 6.5) on synthetic rows whose
answers are known, the KL split of docs/method.md section 2.3, and sweeps over defences and epochs."""

from __future__ import annotations

import csv
import html
import math

import numpy as np
import pytest
import torch

import vaelens
from vaelens._divergences import gaussian_kl, gaussian_kl_parts
from vaelens.experiments import ResultRow, SweepConfig, run_sweep, write_report
from vaelens.experiments._analysis import Measure, frontier, kl_split, length_sentence, tracking, tracking_sentence
from vaelens.experiments._report import frontier_measures
from vaelens.experiments._schema import DAMAGE_MEASURES, damage_column

EPS = (1.0,)
Y = Measure("y", lambda r: r.damage_at("pgd", "kl", 1.0))


def row(beta, y, mse, seed=0, defence="none", epochs=100, rho=1.0, kl_mean=None, kl_var=None):
    damage = {("pgd", q, 1.0): y for q in DAMAGE_MEASURES}
    damage[("pgd", "kl_mean", 1.0)] = y / 2 if kl_mean is None else kl_mean
    damage[("pgd", "kl_var", 1.0)] = y / 2 if kl_var is None else kl_var
    return ResultRow(
        run=f"b{beta}_{defence}_{seed}@{epochs}", dataset="mnist-5k", model="mlp", beta=beta,
        seed=seed, epochs=epochs, test_recon=1.0, test_mse=mse, test_elbo=-1.0,
        train_kl=1.0, active_units=3, rho_mean=rho, rho_median=rho, rho_std=0.0, rho_q25=rho, rho_q75=rho,
        entropy_mean=1.0, entropy_median=1.0, rho_fisher_median=rho, rho_output_median=rho, defence=defence,
        damage=damage,
    )  # fmt: skip


def curve(epochs=100, scale=1.0, seeds=(0, 1)):
    """A beta curve y = scale / mse through mse 0.01, 0.02, 0.04: a straight line in log-log."""
    return [row(b, scale / m, m, s, epochs=epochs) for b, m in ((0.5, 0.01), (1, 0.02), (2, 0.04)) for s in seeds]


def test_ratio_is_read_off_the_curve_in_log_log():
    x = 0.02 * math.sqrt(2)  # halfway between 0.02 and 0.04 in log x
    defended = [row(1, 20.0, x, 0, "mixup"), row(1, 30.0, x, 1, "mixup")]
    (v,) = frontier(curve() + defended, Y)
    expected = 1 / x  # log-log interpolation of y = 1/x is exact; linear-in-x would give 37.5
    assert v.ratios == pytest.approx((20 / expected, 30 / expected), rel=1e-9)
    assert v.beyond and not v.behind and v.extrapolated == 0 and v.verdict() == "beyond"
    assert v.ratio == pytest.approx(25 / expected, rel=1e-9)
    assert "beyond the beta frontier (all 2 seeds below it)" in v.sentence()
    assert v.sentence().startswith("After 100 epochs, mixup (beta 1)")


def test_beyond_only_when_every_seed_agrees():
    split = [row(1, 20.0, 0.02, 0, "mixup"), row(1, 80.0, 0.02, 1, "mixup")]  # curve: 50 there
    (v,) = frontier(curve() + split, Y)
    assert not v.beyond and not v.behind and v.verdict() == "on (seeds disagree)"
    assert "not beyond the beta frontier (1 of 2 seeds below)" in v.sentence()
    above = [row(1, 60.0, 0.02, s, "adversarial") for s in (0, 1)]
    (v,) = frontier(curve() + above, Y)
    assert v.behind and v.ratios == pytest.approx((1.2, 1.2))


def test_extrapolation_is_flagged_and_uses_the_end_value():
    far = [row(1, 50.0, 0.005, 0, "mixup")]
    (v,) = frontier(curve(seeds=(0,)) + far, Y)
    assert v.extrapolated == 1 and v.ratios == pytest.approx((0.5,))  # the curve's end, 100, stands in
    assert "not judged: 1 of 1 seeds lie outside" in v.sentence() and v.verdict().startswith("not judged")
    assert "beyond" not in v.sentence()  # a ratio against a curve held flat is no verdict


def test_each_training_length_has_its_own_curve_and_the_flip_is_named():
    rows = curve(10, scale=1.0) + curve(100, scale=4.0)
    rows += [row(1, 30.0, 0.02, s, "mixup", epochs=10) for s in (0, 1)]  # 0.6x the epoch-10 curve (50)
    rows += [row(1, 300.0, 0.02, s, "mixup", epochs=100) for s in (0, 1)]  # 1.5x the epoch-100 curve (200)
    verdicts = frontier(rows, Y)
    assert [(v.epochs, v.verdict()) for v in verdicts] == [(10, "beyond"), (100, "behind")]
    sentence = length_sentence(verdicts)
    assert "10: 0.6x (beyond), 100: 1.5x (behind)" in sentence
    assert "changes between epochs 10 and 100 (beyond -> behind)" in sentence
    steady = length_sentence([v for v in frontier(curve(10) + curve(100) + rows[-4:-2], Y)])
    assert "holds at every training length measured (10-10 epochs)" in steady


def test_no_verdict_without_a_curve_of_two_betas():
    lonely = [row(0.5, 100.0, 0.01), row(1, 20.0, 0.02, 0, "mixup")]
    assert frontier(lonely, Y) == []


def test_kl_split_sentence_names_the_part_that_moved():
    rows = curve() + [row(1, 90.0, 0.02, s, "mixup", kl_mean=20.0, kl_var=70.0) for s in (0, 1)]
    (s,) = kl_split(
        rows, Y.of, lambda r: r.damage_at("pgd", "kl_mean", 1.0), lambda r: r.damage_at("pgd", "kl_var", 1.0)
    )
    assert s.defended == (90.0, 20.0, 70.0) and s.plain == (50.0, 25.0, 25.0)
    text = s.sentence()
    assert "1.8x against no defence" in text and "mean-shift part 0.8x" in text and "variance part 2.8x" in text
    assert "the variance part is 78% of the damage against 50%" in text and "mostly in the variance part" in text
    # a small part that changes by a large factor does not carry the change: the absolute change decides
    rows = curve() + [row(1, 26.0, 0.02, s, "adversarial", kl_mean=25.7, kl_var=0.3) for s in (0, 1)]
    rows = [r if r.defence != "none" or r.beta != 1 else row(1, 48.0, 0.02, r.seed, kl_mean=47.0, kl_var=1.0)
            for r in rows]  # fmt: skip
    (s,) = kl_split(
        rows, Y.of, lambda r: r.damage_at("pgd", "kl_mean", 1.0), lambda r: r.damage_at("pgd", "kl_var", 1.0)
    )
    assert "variance part 0.3x" in s.sentence() and "mostly in the mean-shift part" in s.sentence()


def test_tracking_finds_the_score_that_ranks_configurations_like_the_damage():
    rows = [row(b, y, 0.01 * b, rho=r) for b, y, r in ((0.5, 9.0, 3.0), (1, 4.0, 2.0), (2, 1.0, 1.0))]
    corr = tracking(rows, {"good": lambda r: r.rho_median, "bad": lambda r: -r.rho_median}, {"kl": Y.of})
    assert corr[("good", "kl")] == pytest.approx(1.0) and corr[("bad", "kl")] == pytest.approx(-1.0)
    assert "kl is tracked best by good (Spearman +1.00)" in tracking_sentence(corr, 3)
    tied = tracking(rows, {"a": lambda r: r.rho_median, "b": lambda r: 2 * r.rho_median}, {"kl": Y.of})
    assert "kl is tracked best by a and b (Spearman +1.00)" in tracking_sentence(tied, 3)


def test_kl_parts_sum_to_the_kl_and_separate_mean_from_variance():
    g = torch.Generator().manual_seed(0)
    mu1, mu2, lv1, lv2 = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(4))
    parts = gaussian_kl_parts(mu1, lv1, mu2, lv2)
    torch.testing.assert_close(parts.mean + parts.variance, gaussian_kl(mu1, lv1, mu2, lv2), rtol=1e-12, atol=0)
    assert (parts.mean >= 0).all() and (parts.variance >= 0).all()
    only_var = gaussian_kl_parts(mu2, lv1, mu2, lv2)
    assert (only_var.mean == 0).all() and (only_var.variance > 0).all()
    only_mean = gaussian_kl_parts(mu1, lv2, mu2, lv2)
    assert (only_mean.variance == 0).all()
    expected = 0.5 * ((mu1 - mu2) ** 2 / lv2.exp()).sum(1)  # half the squared Mahalanobis distance
    torch.testing.assert_close(only_mean.mean, expected, rtol=1e-12, atol=0)


def test_sweep_config_defences_and_epochs():
    config = SweepConfig(betas=(1.0, 2.0), defences=("none", "mixup", "adversarial"), mixup_betas=(1.0,),
                         epochs=4, eval_epochs=(2, 1, 4))  # fmt: skip
    assert config.eval_epochs == (1, 2)  # the last epoch is always evaluated
    names = [u.name for u in config.units()]
    assert names == ["mnist-5k_mlp_beta1_seed0", "mnist-5k_mlp_beta1_mixup_seed0", "mnist-5k_mlp_beta1_adv_seed0",
                     "mnist-5k_mlp_beta2_seed0"]  # fmt: skip
    assert [u.defence for u in config.units()] == ["none", "mixup", "adversarial", "none"]
    for kwargs, match in (({"defences": ("dropout",)}, "defences"), ({"eval_epochs": (5,)}, "eval_epochs"),
                          ({"mixup_target": "median"}, "latent_target"), ({"adv_eps": 0.0}, "adv-eps")):  # fmt: skip
        with pytest.raises(vaelens.VaelensError, match=match):
            SweepConfig(epochs=4, **kwargs)
    old = SweepConfig().to_dict()  # a sweep.json written before these settings existed
    for key in ("defences", "eval_epochs", "cosine_t_max", "mixup_target", "adv_eps", "adv_steps"):
        old.pop(key)
    assert SweepConfig.identity_of(old) == SweepConfig().identity()
    assert SweepConfig(cosine_t_max=200).identity() != SweepConfig().identity()


@pytest.mark.slow
def test_sweep_evaluates_every_kept_epoch_and_reports_the_frontier(tmp_path):
    config = SweepConfig(datasets=("digits",), betas=(0.5, 1.0), defences=("none", "adversarial"),
                         mixup_betas=(1.0,), epochs=2, eval_epochs=(1,), latent_dim=3, n=8, eps=(0.5,), pgd_steps=2,
                         probe_n=0, adv_steps=2)  # fmt: skip
    result = run_sweep(config, tmp_path / "s", progress=False)
    assert [(r.run, r.epochs, r.defence) for r in result.rows][2:] == [
        ("digits_mlp_beta1_seed0@1", 1, "none"),
        ("digits_mlp_beta1_seed0", 2, "none"),
        ("digits_mlp_beta1_adv_seed0@1", 1, "adversarial"),
        ("digits_mlp_beta1_adv_seed0", 2, "adversarial"),
    ]
    with open(tmp_path / "s" / "results.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == [r.run for r in result.rows]
    samples = {}
    with open(tmp_path / "s" / "runs" / "digits_mlp_beta1_adv_seed0@1" / "samples.csv") as f:
        for r in csv.DictReader(f):
            for k, v in r.items():
                samples.setdefault(k, []).append(float(v))
    for method in ("pgd", "strongest"):
        kl, m, v = (np.array(samples[damage_column(method, q, 0.5)]) for q in ("kl", "kl_mean", "kl_var"))
        np.testing.assert_allclose(m + v, kl, rtol=1e-4, atol=1e-6)
    first, last = result.rows[-2:]
    assert first.test_mse != last.test_mse  # two different models were evaluated
    again = run_sweep(config, tmp_path / "s", progress=False)  # resumes: nothing to do, the same rows
    assert [r.record() for r in again.rows] == [r.record() for r in result.rows]
    page = html.unescape(write_report(tmp_path / "s").read_text())
    for measure in frontier_measures(0.5):  # the report prints what the analysis computes from its rows
        assert length_sentence(frontier(result.rows, measure)) in page
    assert (tmp_path / "s" / "report" / "frontier.png").is_file()
    assert (tmp_path / "s" / "report" / "against_epochs.png").is_file()
