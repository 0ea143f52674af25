"""Auto-PGD against known optima, its schedule, and attacks that never silently do nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vaelens
from vaelens.attacks import APGD, PGD, Reference, divergence
from vaelens.attacks._apgd import checkpoints
from vaelens.attacks._base import random_in_ball


class LinearVAE(nn.Module):
    """mu = W x, constant logvar: the latent objective is ||W delta||^2, with known maxima."""

    input_shape = (1, 4, 4)

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)
        self.v = nn.Parameter(torch.randn(w.shape[0], 16, dtype=w.dtype))

    def encode(self, x):
        mu = x.flatten(1) @ self.w.T
        return mu, torch.zeros_like(mu)

    def decode(self, z):
        return torch.sigmoid(z @ self.v).view(-1, 1, 4, 4)


X = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)  # inside the box with room for eps = 0.1


def test_l2_maximum_is_eps_times_the_top_singular_direction():
    torch.manual_seed(0)
    model = LinearVAE(torch.randn(3, 16, dtype=torch.float64))
    x_adv = APGD(model, eps=0.1, norm="l2", objective="latent", steps=100)(X)
    reached = divergence(model, x_adv, Reference.of(model, X), "latent")
    optimum = (0.1 * torch.linalg.svdvals(model.w.detach())[0]) ** 2
    torch.testing.assert_close(reached, optimum.expand(3), rtol=1e-5, atol=0)


def test_linf_maximum_is_the_corner_of_the_box():
    torch.manual_seed(1)
    model = LinearVAE(torch.randn(1, 16, dtype=torch.float64))  # rank one: the best corner is eps sign(w)
    x_adv = APGD(model, eps=0.1, norm="linf", objective="latent", steps=100)(X)
    reached = divergence(model, x_adv, Reference.of(model, X), "latent")
    optimum = (0.1 * model.w.detach().abs().sum()) ** 2
    torch.testing.assert_close(reached, optimum.expand(3), rtol=1e-5, atol=0)


@pytest.mark.parametrize("norm, eps", [("l2", 1.0), ("linf", 0.1)])
@pytest.mark.parametrize("objective", ["kl", "kl_reverse", "skl", "latent", "recon", "stochastic"])
def test_apgd_never_ends_below_its_first_iterate(digits_run, norm, eps, objective):
    model = vaelens.load(digits_run)
    x = vaelens.data.take(vaelens.data.load_dataset("digits", "test"), 12)[0]
    attack = APGD(model, eps=eps, norm=norm, objective=objective, steps=20, seed=3)
    x_adv = attack(x)
    ref = Reference.of(model, x)
    start = (x + random_in_ball(x, eps, norm, 3, "apgd/0")).clamp(0, 1)
    with torch.no_grad():
        assert (divergence(model, x_adv, ref, objective) >= divergence(model, start, ref, objective) - 1e-6).all()
    assert ((x_adv - x).flatten(1).abs().amax(1) <= eps + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_the_step_halves_when_the_objective_stalls():
    class Flat(nn.Module):  # the objective is constant: every checkpoint must halve the step
        input_shape = (1, 4, 4)

        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.zeros(2))

        def encode(self, x):
            mu = self.b.expand(len(x), 2) + 0 * x.flatten(1)[:, :2]
            return mu, torch.zeros_like(mu)

        def decode(self, z):
            return torch.sigmoid(z.sum(1, keepdim=True)).expand(-1, 16).reshape(-1, 1, 4, 4)

    attack = APGD(Flat(), eps=0.5, norm="l2", objective="latent", steps=40)
    attack(torch.rand(4, 1, 4, 4))
    expected = 2 * 0.5 / 2 ** len(checkpoints(40))
    torch.testing.assert_close(attack.last_step_sizes, torch.full((4,), expected))
    assert checkpoints(100) == [
        22,
        41,
        57,
        70,
        80,
        87,
        93,
        99,
    ]  # p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)


@pytest.mark.parametrize("objective", ["kl", "skl", "kl_reverse"])
def test_a_zero_gradient_start_still_moves_every_sample(digits_run, objective):
    """From delta = 0 the KL objectives have zero gradient; the first step is then the top fisher
    eigenvector, so the attack does not silently return its input."""
    model = vaelens.load(digits_run)
    x = vaelens.data.take(vaelens.data.load_dataset("digits", "test"), 10)[0]
    x_adv = PGD(model, eps=0.5, objective=objective, steps=5, random_start=False)(x)
    damage = vaelens.attack_damage(model, x, x_adv)
    assert (damage.no_progress == 0).all() and (damage.kl > 0).all()
    still = vaelens.attack_damage(model, x, x.clone())
    assert (still.no_progress == 1).all()  # an unchanged input is flagged


def test_apgd_on_a_float64_model_with_float32_inputs(digits_run):
    model = vaelens.load(digits_run).double()
    x = vaelens.data.take(vaelens.data.load_dataset("digits", "test"), 6)[0]  # float32
    x_adv = APGD(model, eps=0.5, steps=10)(x)
    assert x_adv.dtype == torch.float64 and (vaelens.attack_damage(model, x, x_adv).kl > 0).all()


def test_cli_attack_with_apgd(run_cli, digits_run, tmp_path):
    code, stdout, stderr = run_cli("attack", digits_run, "--method", "apgd", "--n", "8", "--steps", "10",
                                   "--eps", "0.5,1", "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, stderr
    assert "apgd attack" in stdout and (tmp_path / "a" / "damage.csv").is_file()
    header = (tmp_path / "a" / "damage.csv").read_text().splitlines()[0]
    assert header.endswith("no_progress")


@pytest.mark.parametrize("norm, eps, objective", [("l2", 1.0, "kl"), ("linf", 0.1, "skl"), ("l2", 0.5, "latent")])
def test_strongest_is_at_least_as_damaging_as_each_member_on_every_sample(digits_run, norm, eps, objective):
    from vaelens.attacks import Strongest

    model = vaelens.load(digits_run)
    x = vaelens.data.take(vaelens.data.load_dataset("digits", "test"), 16)[0]
    attack = Strongest(model, eps=eps, norm=norm, objective=objective, steps=10, seed=0)
    x_adv = attack(x)
    ref = Reference.of(model, x)
    with torch.no_grad():
        ours = divergence(model, x_adv, ref, objective)
        for name, member in attack.members.items():
            theirs = divergence(model, member(x), ref, objective)
            assert (ours >= theirs - 1e-6).all(), name
    assert len(attack.last_winners) == 16 and set(attack.last_winners) <= {"eigen", "pgd", "apgd"}


def test_cli_strongest_names_the_winner_of_each_input(run_cli, digits_run, tmp_path):
    import csv

    code, _, stderr = run_cli("attack", digits_run, "--method", "strongest", "--n", "8", "--steps", "5",
                              "--out", tmp_path / "s", "--quiet")  # fmt: skip
    assert code == 0, stderr
    with open(tmp_path / "s" / "damage.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["winner"] for r in rows} <= {"eigen", "pgd", "apgd"}
