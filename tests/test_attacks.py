import copy
import functools
import json

import pytest
import torch

import vaelens
from vaelens.attacks import PGD, EigenAttack, RandomNoise, TargetedAttack, attack_damage
from vaelens.attacks._objectives import OBJECTIVES, Reference, divergence
from vaelens.data import load_dataset, take
from vaelens.evaluation import auddc
from vaelens.models import MLPVAE


def _model():
    torch.manual_seed(0)
    return MLPVAE(input_shape=(1, 6, 6), latent_dim=3, hidden=(24, 12)).double().eval()


def _x(n=4, seed=1):
    return torch.rand(n, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _pgd(m, eps, norm, objective):
    return PGD(m, eps, norm, objective=objective, steps=5)


ATTACKS = {
    "eigen": lambda m, eps, norm: EigenAttack(m, eps, norm),
    "eigen-3-stochastic": lambda m, eps, norm: EigenAttack(m, eps, norm, kind="stochastic", directions=3),
    **{f"pgd-{o}": functools.partial(_pgd, objective=o) for o in OBJECTIVES},
    "pgd-restarts": lambda m, eps, norm: PGD(m, eps, norm, steps=3, restarts=2),
    "random": lambda m, eps, norm: RandomNoise(m, eps, norm),
    "targeted": lambda m, eps, norm: TargetedAttack(m, eps, norm, steps=5),
}


def _run(attack, x):
    return attack(x, _x(len(x), seed=9)) if attack.targeted else attack(x)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_within_budget_and_range(name, norm):
    model, x = _model(), _x()
    eps = 0.3
    x_adv = _run(ATTACKS[name](model, eps, norm), x)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-9)).all()
    assert (size > 0).any()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_model_untouched(name):
    model = _model()
    model.train()
    before = copy.deepcopy(model.state_dict())
    _run(ATTACKS[name](model, 0.5, "l2"), _x())
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_batched_equals_per_sample(name):
    model, x = _model(), _x(5)
    attack = ATTACKS[name](model, 0.4, "l2")
    target = _x(5, seed=9)
    whole = attack(x, target) if attack.targeted else attack(x)
    single = torch.cat(
        [attack(x[i : i + 1], target[i : i + 1]) if attack.targeted else attack(x[i : i + 1]) for i in range(5)]
    )
    torch.testing.assert_close(whole, single, rtol=0, atol=1e-9)


def test_deterministic_for_a_seed():
    model, x = _model(), _x()
    a = PGD(model, 0.4, seed=3, steps=3)(x)
    b = PGD(model, 0.4, seed=3, steps=3)(x)
    c = PGD(model, 0.4, seed=4, steps=3)(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eigen_reaches_second_order_kl():
    """KL(q(z|x + eps v1) || q(z|x)) ~ eps^2 lambda_1 / 2 for small eps (docs/method.md section 3)."""
    model = _model()
    x = 0.25 + 0.5 * _x(6)  # interior points, so that no pixel is clamped
    eps = 1e-3
    lam1 = vaelens.pullback_metric(model, x, "fisher").eigenvalues(1)[:, 0]
    kl = attack_damage(model, x, EigenAttack(model, eps)(x)).kl
    torch.testing.assert_close(kl / (eps**2 * lam1 / 2), torch.ones_like(kl, dtype=torch.float64), rtol=1e-2, atol=0)


@pytest.fixture(scope="module")
def trained(mnist_run):
    return vaelens.load(mnist_run), take(load_dataset("mnist-5k", "test"), 64)[0]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["kl", "skl", "latent", "recon"])
def test_pgd_beats_random_on_its_objective(trained, objective):
    model, x = trained
    ref = Reference.of(model, x)
    with torch.no_grad():
        pgd = divergence(model, PGD(model, 1.0, objective=objective, steps=20)(x), ref, objective)
        rnd = divergence(model, RandomNoise(model, 1.0)(x), ref, objective)
    assert pgd.mean() > 2 * rnd.mean()
    assert (pgd >= rnd).float().mean() > 0.9


@pytest.mark.slow
def test_eigen_beats_random_at_small_eps(trained):
    model, x = trained
    eigen = attack_damage(model, x, EigenAttack(model, 0.25)(x)).kl
    rnd = attack_damage(model, x, RandomNoise(model, 0.25)(x)).kl
    assert eigen.mean() > 3 * rnd.mean()


@pytest.mark.slow
def test_targeted_attack_moves_towards_target(trained):
    model, x = trained
    source, target = x[:16], x[16:32]
    x_adv = TargetedAttack(model, 2.0, steps=30)(source, target)
    ref = Reference.of(model, target)
    with torch.no_grad():
        before = divergence(model, source, ref, "skl")
        after = divergence(model, x_adv, ref, "skl")
    assert (after < before).all() and after.mean() < 0.7 * before.mean()


def test_damage_of_nothing_is_nothing():
    model, x = _model(), _x()
    d = attack_damage(model, x, x.clone())
    for name in ("kl", "skl", "latent_l2", "recon_shift", "prior_logp_drop", "l2", "linf"):
        assert torch.allclose(d.as_dict()[name], torch.zeros(4, dtype=d.kl.dtype), atol=1e-12), name
    torch.testing.assert_close(d.ms_ssim_recon, torch.ones(4, dtype=d.kl.dtype))
    assert set(d.summary()["kl"]) == {"mean", "median", "std", "q05", "q25", "q75", "q95"}


@pytest.mark.parametrize("shape", [(9, 9), (10, 40), (40, 33), (47, 64)])
def test_ms_ssim_takes_any_image_size(shape):
    from vaelens.attacks._damage import ms_ssim

    a = torch.rand(2, 3, *shape, dtype=torch.float64)
    torch.testing.assert_close(ms_ssim(a, a), torch.ones(2, dtype=torch.float64))
    assert (ms_ssim(a, torch.rand_like(a)) < 0.9).all()


def test_damage_on_flat_inputs_has_nan_ms_ssim_only():
    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = torch.nn.Linear(5, 4), torch.nn.Linear(2, 5)

        def encode(self, x):
            h = self.enc(x)
            return h[:, :2], h[:, 2:]

        def decode(self, z):
            return torch.sigmoid(self.dec(z))

    x = torch.rand(3, 5)
    d = attack_damage(Flat(), x, RandomNoise(Flat(), 0.1)(x))
    assert torch.isnan(d.ms_ssim_recon).all() and torch.isfinite(d.kl).all()


def test_auddc_by_hand():
    assert auddc([0.0, 1.0, 2.0], [0.0, 1.0, 3.0]) == pytest.approx((0.5 + 2.0) / 2)
    assert auddc([2.0, 0.0, 1.0], [3.0, 0.0, 1.0]) == pytest.approx(1.25)
    assert auddc([1.0], [0.7]) == 0.7


@pytest.mark.parametrize(
    "make, call, match",
    [
        (lambda m: PGD(m, 0.0), None, "eps must be"),
        (lambda m: PGD(m, -1.0), None, "eps must be"),
        (lambda m: PGD(m, float("nan")), None, "eps must be"),
        (lambda m: PGD(m, 0.1, norm="l1"), None, "unknown norm"),
        (lambda m: PGD(m, 0.1, objective="wasserstein"), None, "unknown objective"),
        (lambda m: PGD(m, 0.1, steps=0), None, "steps"),
        (lambda m: EigenAttack(m, 0.1, kind="riemann"), None, "unknown metric kind"),
        (lambda m: PGD(m, 0.1), lambda a: a(torch.rand(2, 1, 5, 5)), "per-sample shape"),
        (lambda m: PGD(m, 0.1), lambda a: a(torch.full((2, 1, 6, 6), float("nan"))), "NaN"),
        (lambda m: PGD(m, 0.1), lambda a: a(torch.rand(2, 1, 6, 6) * 3), r"\[0, 1\]"),
        (lambda m: TargetedAttack(m, 0.1), lambda a: a(torch.rand(2, 1, 6, 6)), "attack\\(x, x_target\\)"),
        (lambda m: PGD(m, 0.1), lambda a: a(torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)), "untargeted"),
        (
            lambda m: TargetedAttack(m, 0.1),
            lambda a: a(torch.rand(2, 1, 6, 6), torch.rand(3, 1, 6, 6)),
            "shape",
        ),
    ],
)
def test_bad_input(make, call, match):
    model = _model()
    with pytest.raises(vaelens.VaelensError, match=match):
        attack = make(model)
        call(attack)


def test_cli_attack_eps_curve(run_cli, digits_run, tmp_path):
    out = tmp_path / "atk"
    code, stdout, stderr = run_cli(
        "attack",
        digits_run,
        "--method",
        "pgd",
        "--eps",
        "0.25,0.5,1",
        "--steps",
        "5",
        "--n",
        "20",
        "--out",
        out,
        "--quiet",
    )
    assert code == 0, stderr
    assert "AUDDC (kl)" in stdout
    names = {p.name for p in out.iterdir()}
    assert {"damage.csv", "summary.json", "damage_vs_eps.png", "adversarial_grid.png"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert [r["eps"] for r in summary["per_eps"]] == [0.25, 0.5, 1.0]
    assert summary["auddc"]["kl"] > 0
    assert len((out / "damage.csv").read_text().splitlines()) == 1 + 60


@pytest.mark.parametrize("extra", [["--method", "eigen", "--directions", "2"], ["--method", "random"], ["--targeted"]])
def test_cli_attack_methods(run_cli, digits_run, tmp_path, extra):
    code, _, stderr = run_cli(
        "attack",
        digits_run,
        "--eps",
        "0.5",
        "--n",
        "10",
        "--steps",
        "3",
        "--out",
        tmp_path / "a",
        "--quiet",
        *extra,
    )
    assert code == 0, stderr
    assert (tmp_path / "a" / "adversarial_grid.png").is_file()


def test_cli_targeted_reports_distance_to_targets(run_cli, digits_run, tmp_path):
    out = tmp_path / "t"
    code, stdout, stderr = run_cli(
        "attack", digits_run, "--targeted", "--eps", "0.5,2", "--n", "12", "--steps", "10", "--out", out, "--quiet"
    )
    assert code == 0, stderr
    assert "SKL to the targets' posteriors" in stdout
    summary = json.loads((out / "summary.json").read_text())
    before = summary["target_skl_before"]["mean"]
    assert all(row["target_skl_after"]["mean"] < before for row in summary["per_eps"])
    header = (out / "damage.csv").read_text().splitlines()[0]
    assert header.endswith("target_skl_before,target_skl_after")
    assert summary["attack"]["objective"] == "skl"  # the targeted default


def test_cli_targeted_kl_is_kl_not_skl(run_cli, digits_run, tmp_path):
    """--objective kl with --targeted minimises KL to the target; it used to be rewritten to skl."""
    runs = {}
    for objective in ("kl", "skl"):
        out = tmp_path / objective
        code, _, stderr = run_cli("attack", digits_run, "--targeted", "--objective", objective, "--eps", "1",
                                  "--n", "12", "--steps", "10", "--out", out, "--quiet")  # fmt: skip
        assert code == 0, stderr
        runs[objective] = json.loads((out / "summary.json").read_text())
    assert runs["kl"]["attack"]["objective"] == "kl"
    assert runs["kl"]["per_eps"][0]["kl"] != runs["skl"]["per_eps"][0]["kl"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--method", "fgsm"], "unknown attack method"),
        (["--eps", "0"], "eps must be"),
        (["--eps", "a,b"], "--eps takes"),
        (["--norm", "l1"], "unknown norm"),
        (["--objective", "mmd"], "unknown objective"),
        (["--targeted", "--method", "eigen"], "--targeted works with"),
    ],
)
def test_cli_attack_errors(run_cli, digits_run, tmp_path, args, match):
    code, stdout, stderr = run_cli("attack", digits_run, "--n", "4", "--out", tmp_path / "a", "--quiet", *args)
    assert code == 2, stdout
    assert match in stderr and "Traceback" not in stderr + stdout
