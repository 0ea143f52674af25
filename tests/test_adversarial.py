"""Adversarial training (docs/method.md section 6.4): the loss holds the adversarial ELBO, and
gradients reach the parameters only through that term, never through the attack."""

import csv
import math

import pytest
import torch

import vaelens
from vaelens.data import load_dataset, take
from vaelens.models import build_model
from vaelens.training import AdversarialConfig, adversarial_terms, train
from vaelens.training._adversarial import adversarial_inputs
from vaelens.training._loss import elbo_pass

from conftest import tiny_config


def _model_and_batch():
    torch.manual_seed(0)
    model = build_model(tiny_config().model).train()
    x, _ = take(load_dataset("digits", "train"), 16)
    return model, x


def test_attack_moves_inputs_within_budget_and_raises_kl():
    model, x = _model_and_batch()
    config = AdversarialConfig(eps=0.5, steps=3)
    x_adv = adversarial_inputs(model, x, config, seed=1)
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    terms = adversarial_terms(model, x, config, 1.0, torch.zeros(16, 3), "bernoulli", seed=1)
    assert terms.damage > 0
    assert model.training and all(p.requires_grad for p in model.parameters())  # the attack restored both
    assert all(p.grad is None for p in model.parameters())  # the attack's own gradients never landed


def test_gradient_is_that_of_the_elbo_at_fixed_adversarial_inputs():
    model, x = _model_and_batch()
    config = AdversarialConfig(eps=0.5, steps=3)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    terms = adversarial_terms(model, x, config, 2.0, noise, "bernoulli", seed=1)
    grads = torch.autograd.grad(terms.loss, list(model.parameters()))
    x_adv = adversarial_inputs(model, x, config, seed=1).clone()  # a constant: no path to the parameters
    expected = elbo_pass(model, x_adv, 2.0, noise, "bernoulli").terms
    assert torch.allclose(terms.loss, expected.loss)
    assert torch.allclose(terms.loss, terms.recon + 2.0 * terms.kl)
    for g, e in zip(grads, torch.autograd.grad(expected.loss, list(model.parameters())), strict=True):
        assert torch.allclose(g, e)


def test_training_loss_includes_the_weighted_adversarial_term(tmp_path):
    config = tiny_config(defence=AdversarialConfig(eps=0.5, steps=2, weight=0.7))
    train(config, tmp_path / "r", progress=False)
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
    for r in rows:
        assert r["adv_damage"] > 0 and r["adv_recon"] > 0
        expected = r["recon"] + r["beta"] * r["kl"] + 0.7 * (r["adv_recon"] + r["beta"] * r["adv_kl"])
        assert math.isclose(r["loss"], expected, rel_tol=1e-5)
        assert r["mix_kl"] == 0


def test_zero_weight_trains_exactly_as_plain(tmp_path):
    """With weight 0 the attack still runs every batch; if any of its gradient reached the
    parameters or its draws shifted a training stream, the weights would differ."""
    adv = train(tiny_config(defence=AdversarialConfig(eps=0.5, steps=2, weight=0.0)), tmp_path / "a", progress=False)
    plain = train(tiny_config(), tmp_path / "p", progress=False)
    a, p = adv.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], p[k]) for k in p)


def test_adversarial_training_is_deterministic_and_resumes(tmp_path):
    config = tiny_config(epochs=2, defence=AdversarialConfig(eps=0.5, steps=2))
    a = train(config, tmp_path / "a", progress=False, checkpoint_every=0).model.state_dict()
    b = train(config, tmp_path / "b", progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "kwargs, match", [({"eps": 0.0}, "adv-eps"), ({"steps": 0}, "adv-steps"), ({"weight": -1.0}, "adv-weight")]
)
def test_bad_adversarial_config(kwargs, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        AdversarialConfig(**kwargs)


def test_a_config_json_written_before_the_defence_field_loads():
    from vaelens.training import MixupConfig, NoDefence, TrainConfig

    d = tiny_config().to_dict()
    del d["defence"]
    assert TrainConfig.from_dict({**d, "mixup": None, "adversarial": None}).defence == NoDefence()
    adv = TrainConfig.from_dict({**d, "mixup": None, "adversarial": {"eps": 0.5, "steps": 2, "weight": 1.0}})
    assert adv.defence == AdversarialConfig(eps=0.5, steps=2)
    assert adv.identity() == tiny_config(defence=adv.defence).identity()  # an old run resumes
    old_mixup = {"alpha": 0.3, "per_sample": False, "weight_kl": 1.0, "weight_recon": 1.0, "weight_latent": 1.0}
    mixed = TrainConfig.from_dict({**d, "mixup": {**old_mixup, "latent_target": "mean"}, "adversarial": None})
    assert mixed.defence == MixupConfig(alpha=0.3)
    with pytest.raises(vaelens.VaelensError, match="one defence"):
        TrainConfig.from_dict({**d, "mixup": {}, "adversarial": {}})


def test_cli_defence_flags(run_cli, tmp_path):
    common = ("--dataset", "digits", "--latent-dim", "3", "--hidden", "16", "--epochs", "1", "--quiet")
    code, _, err = run_cli("train", "--out", tmp_path / "a", "--defence", "adversarial", "--adv-steps", "2", *common)
    assert code == 0, err
    config = vaelens.training.read_config(tmp_path / "a")
    assert config.defence == AdversarialConfig(steps=2)
    code, _, err = run_cli("train", "--out", tmp_path / "m", "--mixup", *common)
    assert code == 0 and vaelens.training.read_config(tmp_path / "m").defence.name == "mixup"
    code, _, err = run_cli("train", "--out", tmp_path / "x", "--mixup", "--defence", "adversarial", *common)
    assert code == 2 and "--mixup is --defence mixup" in err
    code, _, err = run_cli("train", "--out", tmp_path / "y", "--defence", "dropout", *common)
    assert code == 2 and "--defence must be one of" in err
