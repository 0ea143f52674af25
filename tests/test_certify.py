"""Center smoothing and its certificates (docs/method.md section 10): known worst cases, attacks that
never beat the certificate, abstention, reproducibility, dtypes and one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vaelens
from vaelens import VaelensError
from vaelens.attacks import APGD, Reference, Strongest, divergence
from vaelens.certification import SmoothConfig, certify_smoothed, required_quantile
from vaelens.evaluation import AuditConfig, audit
from vaelens.experiments import load
from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train


class LinearVAE(nn.Module):
    """mu = A x with constant logvar: the smoothed model's worst latent shift is ||A||_2 eps."""

    input_shape = (1, 4, 4)

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)
        self.v = nn.Parameter(torch.randn(a.shape[0], 16, dtype=a.dtype))

    def encode(self, x):
        mu = x.flatten(1) @ self.a.T
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        return torch.sigmoid(z @ self.v).view(-1, 1, 4, 4)


def linear(seed: int = 0, dtype=torch.float64) -> LinearVAE:
    torch.manual_seed(seed)
    return LinearVAE(torch.randn(3, 16, dtype=dtype))


X = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))  # float32 on purpose
EPS = (0.05, 0.1, 0.25)


def test_linear_bound_covers_the_true_worst_case_within_the_stated_factor():
    model = linear()
    cert = vaelens.certify(model, X, EPS, sigma=0.25, n=2000, n0=100)
    assert not cert.abstain.any()
    top = torch.linalg.svdvals(model.a.detach())[0].item()
    eps = torch.tensor(EPS, dtype=torch.float64)
    assert (cert.bound >= top * eps).all()  # the certificate is an upper bound on the true worst case
    # the stated factor: (1 + beta) times the q-quantile of ||A eta||, eta ~ N(0, sigma^2 I), which is
    # what R-hat estimates (the center is itself a sample near the middle, hence the 1.5 of slack)
    eta = 0.25 * torch.randn(200_000, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    spread = (eta @ model.a.detach().T).norm(dim=1)
    for j, e in enumerate(EPS):
        q = required_quantile(e, 0.25, cert.delta) + math.sqrt(math.log(2 / 0.001) / 4000)
        reference = 3 * spread.quantile(q).item()
        assert (cert.bound[:, j] <= 1.5 * reference).all()
        assert (cert.bound[:, j] >= reference / 1.5).all()


def test_linear_attacks_reach_the_true_worst_case_and_stay_below_the_bound():
    model = linear()
    smoothed = vaelens.smooth(model, 0.25, n=400, n0=20, delta=0.2)
    top = torch.linalg.svdvals(model.a.detach())[0].item()
    inside = 0.25 + 0.5 * X  # room for eps = 0.1 in every direction: [0, 1] clips nothing
    x_adv = APGD(smoothed, eps=0.1, objective="latent", steps=30)(inside)
    reached = divergence(smoothed, x_adv, Reference.of(smoothed, inside.double()), "latent").sqrt()
    # common noise: the smoothed linear model is A x plus a constant, so its worst shift is ||A|| eps
    torch.testing.assert_close(reached, torch.full_like(reached, 0.1 * top), rtol=1e-3, atol=0)
    cert = certify_smoothed(smoothed, inside, 0.1)
    assert (reached <= cert.bound).all()


def test_abstention_rises_with_eps_and_is_total_when_eps_is_large_for_sigma():
    cert = vaelens.certify(linear(), X, (0.05, 0.25, 0.4, 1.0), sigma=0.25, n=1000, n0=50)
    rate = cert.abstain.double().mean(0)
    assert (rate.diff() >= 0).all()
    assert rate[-1] == 1 and rate[0] == 0
    assert cert.bound[cert.abstain].isnan().all() and not cert.bound[~cert.abstain].isnan().any()
    finite = cert.bound[:, :2]
    assert (finite.diff(dim=1) >= 0).all()  # a larger budget never gets a smaller bound


def test_seeded_batch_and_chunk_invariant():
    model = linear()
    a = vaelens.certify(model, X, 0.1, sigma=0.2, n=300, n0=20, seed=3, delta=0.25)
    b = vaelens.certify(model, X[:2], 0.1, sigma=0.2, n=300, n0=20, seed=3, delta=0.25, chunk_size=7)
    c = vaelens.certify(model, X, 0.1, sigma=0.2, n=300, n0=20, seed=4, delta=0.25)
    torch.testing.assert_close(a.bound[:2], b.bound, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.center[:2], b.center, rtol=1e-12, atol=0)
    assert not torch.equal(a.center, c.center)


def test_float64_model_with_float32_inputs_and_recon_output():
    model = linear(dtype=torch.float64)
    cert = vaelens.certify(model, X, 0.1, sigma=0.2, n=300, n0=20, output="recon", delta=0.25)
    assert cert.center.shape == X.shape and cert.center.dtype == torch.float64
    assert cert.output == "recon" and cert.bound.shape == (4,)
    torch.testing.assert_close(cert.bound_rms, cert.bound / 4.0)
    smoothed = vaelens.smooth(model, 0.2, n=300, n0=20, output="recon", delta=0.25)
    mu = smoothed.encode(X.double()).mu
    torch.testing.assert_close(smoothed.decode(mu), cert.center)  # the model's reconstruction is the center


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"n0": 300}, "n0"),
        ({"n0": 500}, "n0"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"eps": []}, "eps"),
        ({"delta": 0.01}, "delta"),
        ({"output": "kl"}, "output"),
        ({"n": 20, "n0": 2}, "too few"),
    ],
)
def test_bad_arguments_fail_in_one_line(kwargs, match):
    args = {"eps": 0.1, "sigma": 0.25, "n": 300, "n0": 20, **kwargs}
    with pytest.raises(VaelensError, match=match) as info:
        vaelens.certify(linear(), X, **args)
    assert "\n" not in str(info.value)


def test_bad_inputs_fail_in_one_line():
    model = linear()
    bad = X.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(VaelensError, match="NaN"):
        vaelens.certify(model, bad, 0.1, sigma=0.25, n=300, n0=20)
    with pytest.raises(VaelensError, match="shape"):
        vaelens.certify(model, torch.rand(2, 1, 5, 5), 0.1, sigma=0.25, n=300, n0=20)
    with pytest.raises(VaelensError, match="base model"):
        vaelens.certify(vaelens.smooth(model, 0.25), X, 0.1, sigma=0.25)


def test_audit_refuses_a_smoothed_model_and_eigen_attack_uses_the_base():
    smoothed = vaelens.smooth(linear(), 0.25, n=300, n0=20, delta=0.25)
    with pytest.raises(VaelensError, match="no Jacobian"):
        audit(smoothed, X, config=AuditConfig(kinds=("mean",), probe_n=0), progress=False)
    with pytest.raises(VaelensError, match="no Jacobian"):
        vaelens.pullback_metric(smoothed, X, "mean")
    x_adv = vaelens.EigenAttack(smoothed, eps=0.1, kind="mean")(X)
    torch.testing.assert_close((x_adv - X.double()).flatten(1).norm(dim=1), torch.full((4,), 0.1, dtype=torch.float64))


def test_config_is_frozen_and_auto_delta_shrinks_with_n():
    assert SmoothConfig(0.25, n=10_000).delta_used < SmoothConfig(0.25, n=2000).delta_used < 0.5
    with pytest.raises(AttributeError):
        SmoothConfig(0.25).sigma = 1.0  # type: ignore[misc]


def _trained(tmp_path_factory, architecture: str) -> nn.Module:
    shape = (1, 8, 8)
    model = ModelConfig(architecture, shape, latent_dim=3, hidden=(32, 16), channels=(8, 16))
    out = tmp_path_factory.mktemp("cert") / architecture
    train(TrainConfig(dataset="digits", model=model, epochs=3, batch_size=64), out, progress=False)
    return load(out)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_attacks_on_the_smoothed_model_never_exceed_the_certificate(tmp_path_factory, architecture):
    torch.manual_seed(0)
    model = _trained(tmp_path_factory, architecture)
    x = vaelens.data.take(vaelens.data.load_dataset("digits", "test"), 6)[0]
    smoothed = vaelens.smooth(model, 0.25, n=400, n0=20, seed=0)
    for eps in (0.1, 0.15):  # eps / sigma that n = 400 samples can certify
        cert = certify_smoothed(smoothed, x, eps)
        ref = Reference.of(smoothed, x)
        for attack in (
            APGD(smoothed, eps, objective="latent", steps=20),
            Strongest(smoothed, eps, objective="latent", steps=10),
        ):
            shift = divergence(smoothed, attack(x), ref, "latent").sqrt().double()
            answered = ~cert.abstain
            assert answered.any()
            assert (shift[answered] <= cert.bound[answered]).all(), (architecture, eps, shift, cert.bound)


def _bracket(bound, attacked, abstain):
    from vaelens.certification import Certificate
    from vaelens.evaluation import Bracket

    bound, attacked = torch.tensor(bound, dtype=torch.float64), torch.tensor(attacked, dtype=torch.float64)
    abstain = torch.tensor(abstain)
    cert = Certificate(torch.zeros(len(bound), 3), bound.masked_fill(abstain, math.nan), abstain,
                       torch.zeros(len(bound)), (0.1, 0.2), 0.25, 0.001, "latent", 0.1, 2000, 100)  # fmt: skip
    return Bracket(cert, attacked, attacked, torch.ones(len(bound)), torch.ones(len(bound)))


def test_summary_findings_are_true_of_the_numbers():
    from vaelens.evaluation import summarize

    s = summarize(_bracket([[1.0, 1.2], [2.0, 2.2]], [[0.1, 0.4], [0.1, 0.4]], [[False, False], [False, True]]))
    rows = s["per_eps"]
    assert rows[0]["median_gap"] == pytest.approx(15.0) and rows[1]["median_gap"] == pytest.approx(3.0)
    assert rows[1]["abstain_rate"] == 0.5 and rows[1]["median_bound"] == pytest.approx(1.2)  # answered only
    assert s["finding"] == {"largest_gap_eps": 0.1, "largest_gap": pytest.approx(15.0), "gap_falls_with_eps": True}
    assert "shrinks as eps grows" in s["explanation"] and "15x" in s["explanation"]
    rising = summarize(_bracket([[1.0, 4.0]], [[0.5, 0.1]], [[False, False]]))
    assert rising["finding"]["largest_gap_eps"] == 0.2 and "does not shrink" in rising["explanation"]
    over = summarize(_bracket([[1.0, 1.0]], [[2.0, 0.5]], [[False, False]]))
    assert over["per_eps"][0]["exceeded"] == 1


def test_bracket_attacks_every_answered_input_unless_limited():
    from vaelens.evaluation import bracket

    smoothed = vaelens.smooth(linear(), 0.25, n=300, n0=20, delta=0.25)
    inside = 0.25 + 0.5 * X
    full = bracket(smoothed, inside, (0.05, 1.0), steps=2)
    assert full.attacked is not None
    answered = ~full.certificate.abstain
    assert answered[:, 0].all() and not answered[:, 1].any()
    assert full.attacked[:, 0].isfinite().all() and full.attacked[:, 1].isnan().all()  # abstained: not attacked
    assert (full.attacked[:, 0] <= full.certificate.bound[:, 0]).all()
    limited = bracket(smoothed, inside, 0.05, steps=2, attack_inputs=1)
    assert limited.attacked is not None
    assert limited.attacked[0].isfinite().all() and limited.attacked[1:].isnan().all()
