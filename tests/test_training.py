import csv
import shutil

import pytest
import torch

import vaelens
from vaelens.training import _trainer, train

from conftest import tiny_config


def _weights(run_dir):
    return vaelens.load(run_dir).state_dict()


def test_training_writes_run_and_lowers_loss(tmp_path):
    result = train(tiny_config(epochs=4), tmp_path / "r", progress=False)
    names = {p.name for p in (tmp_path / "r").iterdir() if p.name != ".lock"}
    assert names == {"config.json", "model.4.safetensors", "optim.4.safetensors", "state.json", "metrics.csv"}
    assert not any(n.endswith(".tmp") for n in names)
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert set(_trainer.METRIC_FIELDS) == set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert not result.model.training


def test_deterministic_for_a_seed(tmp_path):
    a = _weights(train(tiny_config(), tmp_path / "a", progress=False).run_dir)
    b = _weights(train(tiny_config(), tmp_path / "b", progress=False).run_dir)
    c = _weights(train(tiny_config(seed=1), tmp_path / "c", progress=False).run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("checkpoint_every", [0.0, 1e9])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, checkpoint_every):
    config = tiny_config(epochs=3)
    full = _weights(train(config, tmp_path / "full", progress=False).run_dir)

    original = _trainer.evaluate_reconstruction
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(_trainer, "evaluate_reconstruction", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "resumed", progress=False, checkpoint_every=checkpoint_every)
    monkeypatch.setattr(_trainer, "evaluate_reconstruction", original)
    state = tmp_path / "resumed" / "state.json"
    assert state.exists() == (checkpoint_every == 0)  # epoch 1 was checkpointed only if due
    result = train(config, tmp_path / "resumed", progress=False, checkpoint_every=checkpoint_every)
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3]
    resumed = _weights(tmp_path / "resumed")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_finished_run_is_not_retrained(digits_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    before = (run / "model.2.safetensors").read_bytes()
    train(tiny_config(device="cpu"), run, progress=False)
    assert (run / "model.2.safetensors").read_bytes() == before


def test_different_run_in_out_dir_is_refused(digits_run, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    with pytest.raises(vaelens.VaelensError, match="holds a different run.*beta"):
        train(tiny_config(beta=4.0), run, progress=False)


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(vaelens.VaelensError, match="not a vaelens run directory"):
        train(tiny_config(), tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_kl_warmup_ramps_beta(tmp_path):
    result = train(tiny_config(epochs=3, warmup_epochs=2), tmp_path / "w", progress=False)
    betas = [m["beta"] for m in result.metrics]
    assert betas[0] == pytest.approx(0.5) and betas[1] == pytest.approx(1.0) == betas[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=-1.0), "beta must be >= 0"),
        (dict(epochs=0), "epochs"),
        (dict(lr=0.0), "lr"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_training_config(kwargs, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        tiny_config(**kwargs)


def test_unavailable_device_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(vaelens.VaelensError, match="CUDA is not available"):
        train(tiny_config(device="cuda"), tmp_path / "r", progress=False)


def test_conv_training_on_digits(tmp_path):
    from vaelens.models import ModelConfig

    model = ModelConfig("conv", (1, 8, 8), latent_dim=2, channels=(4, 8), likelihood="gaussian")
    result = train(tiny_config(model=model, epochs=1), tmp_path / "c", progress=False)
    assert result.metrics[0]["test_mse"] > 0


def test_test_mse_matches_an_independent_computation(tmp_path):
    from vaelens.data import load_dataset

    result = train(tiny_config(epochs=2), tmp_path / "r", progress=False)
    test = load_dataset("digits", "test")
    x = test.images  # (360, 1, 8, 8)
    with torch.no_grad():
        mu = result.model.encode(x)[0]  # (360, 3)
        recon = result.model.decode(mu)
    expected = float(((recon - x) ** 2).mean())
    assert result.metrics[-1]["test_mse"] == pytest.approx(expected, rel=1e-5)
    bce = torch.nn.functional.binary_cross_entropy(recon.clamp(1e-6, 1 - 1e-6), x, reduction="sum") / len(x)
    assert result.metrics[-1]["test_recon"] == pytest.approx(float(bce), rel=1e-3)


def test_shuffle_noise_and_mixup_streams_are_distinct():
    streams = _trainer.epoch_streams(seed=0, epoch=0, device=torch.device("cpu"))
    draws = [torch.rand(8, generator=g) for g in streams]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(draws[i], draws[j]), (i, j)
    again = _trainer.epoch_streams(seed=0, epoch=0, device=torch.device("cpu"))
    assert torch.equal(torch.rand(8, generator=again.noise), draws[1])  # reproducible per (seed, epoch)
    other = _trainer.epoch_streams(seed=0, epoch=1, device=torch.device("cpu"))
    assert not torch.equal(torch.rand(8, generator=other.noise), draws[1])
