"""Amortised protection (docs/method.md section 9): the protector's budget, training, runs and CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_protect_ensemble import MODELS, Patch, image, one_thread  # noqa: F401  (autouse: one torch thread)

from vaelens import VaelensError
from vaelens.evaluation import (
    EnsembleObjective,
    ProtectConfig,
    ProtectorTrainConfig,
    _images,
    apply_protector,
    protect,
    protector_perturb,
    read_image,
    train_epoch,
    training_images,
)
from vaelens.experiments import load_protector, train_protector
from vaelens.models import ProtectorNet, ProtectorNetConfig

EXE = str(Path(sys.executable).with_name("vaelens"))


def wild_net(eps: float = 4.0, channels: int = 3) -> ProtectorNet:
    """A protector with large random weights: its outputs saturate, the budget must still hold."""
    torch.manual_seed(0)
    net = ProtectorNet(ProtectorNetConfig(channels=channels, width=4, eps=eps))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50)
    return net


def test_the_budget_holds_by_construction_and_after_8_bit_rounding(tmp_path):
    net = wild_net(eps=4)
    x = torch.rand(2, 3, 13, 22)
    with torch.no_grad():
        assert float(net(x).abs().max()) <= 4 / 255 + 1e-7
    pictures = {"a.png": image(13, 22, 0), "b.png": image(16, 16, 1), "gray.png": image(12, 12, 2)[:1]}
    config = ProtectConfig(eps=4, evaluate=False)
    results = protect(Patch(0), pictures, config, progress=False, perturb=protector_perturb(net, config))
    for name, p in results.items():
        _images.write_png(tmp_path / name, p.image)
        written = read_image(tmp_path / name)
        assert written.shape == pictures[name].shape
        assert (written.int() - pictures[name].int()).abs().max() <= 4, name
    mask = torch.zeros(16, 16)
    mask[:8] = 0.5
    masked = protect(Patch(0), {"b.png": pictures["b.png"]}, config, mask=mask, progress=False,
                     perturb=protector_perturb(net, config))["b.png"]  # fmt: skip
    change = (masked.image.int() - pictures["b.png"].int()).abs()
    assert change[:, 8:].max() == 0 and change[:, :8].max() <= 2


def test_a_trained_protector_beats_random_noise_of_the_same_budget_on_held_out_images():
    model = Patch(0, dtype=torch.float32)
    train = training_images({f"{i}": image(32, 32, i) for i in range(8)}, 16, 3)
    config = ProtectorTrainConfig(epochs=8, crop=16, batch_size=8, crops_per_image=4, lr=1e-2, width=8)
    torch.manual_seed(0)
    net = ProtectorNet(ProtectorNetConfig(channels=3, width=8, eps=8))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    losses = [train_epoch(net, optimizer, [model], train, config, epoch) for epoch in range(config.epochs)]
    assert losses[-1] < losses[0]
    held_out = torch.stack([image(16, 16, 100 + i) for i in range(8)]).float() / 255  # (8, 3, 16, 16)
    objective = EnsembleObjective([model], held_out, torch.full((1, 3, 16, 16), 0.5))
    quantised = (apply_protector(net, held_out) * 255).round() / 255
    g = torch.Generator().manual_seed(0)
    noise = ((held_out + (torch.rand(held_out.shape, generator=g) * 2 - 1) * 8 / 255).clamp(0, 1) * 255).round() / 255
    with torch.no_grad():
        ours, random = float(objective(quantised).mean()), float(objective(noise).mean())
    assert ours < 0.9 * random, (ours, random)


def test_training_with_eot_transforms_and_bf16_draws_them_and_stays_finite(monkeypatch):
    from vaelens.evaluation import _protector

    drawn: list[str] = []
    real = _protector.RandomTransform

    class Spy(real):  # type: ignore[misc, valid-type]
        def __call__(self, x):
            out = super().__call__(x)
            drawn.append(self.drawn[-1][0])
            return out

    monkeypatch.setattr(_protector, "RandomTransform", Spy)
    train = training_images({"a": image(24, 24, 0)}, 16, 3)
    config = ProtectorTrainConfig(epochs=1, crop=16, batch_size=2, crops_per_image=4, width=4, robust=("jpeg", "blur"),
                                  eot_samples=2, precision="bf16")  # fmt: skip
    torch.manual_seed(0)
    net = ProtectorNet(ProtectorNetConfig(channels=3, width=4))
    loss = train_epoch(net, torch.optim.Adam(net.parameters()), [Patch(0, dtype=torch.float32)], train, config, 0)
    assert torch.isfinite(torch.tensor(loss)) and len(drawn) == 2 * 2  # two steps, two draws each
    assert set(drawn) <= {"identity", "jpeg", "blur"}


def test_refine_steps_continue_from_the_protectors_output():
    net, model = wild_net(eps=8), Patch(0)
    pictures = {"a.png": image(16, 16, 0)}
    config = ProtectConfig(evaluate=False)
    plain = protect(model, pictures, config, progress=False, perturb=protector_perturb(net, config))["a.png"]
    refined = protect(model, pictures, config, progress=False, perturb=protector_perturb(net, config, 10))["a.png"]
    assert refined.distance_after < plain.distance_after
    with pytest.raises(VaelensError, match="trained for eps 8"):
        protector_perturb(net, ProtectConfig(eps=9))
    with pytest.raises(VaelensError, match="refine-steps"):
        protector_perturb(net, config, -1)


def test_config_refuses_bad_values():
    for bad, message in [(dict(eps=0), "8-bit units"), (dict(eps=300), "8-bit units"), (dict(crop=4), "crop >= 8"),
                         (dict(epochs=0), "epochs 0"), (dict(lr=2.0), "lr"), (dict(robust=("crop",)), "choose from"),
                         (dict(precision="fp8"), "unknown precision")]:  # fmt: skip
        with pytest.raises(VaelensError, match=message):
            ProtectorTrainConfig(**bad)
    with pytest.raises(VaelensError, match="no images"):
        training_images({}, 16, 3)
    with pytest.raises(VaelensError, match="smaller than --crop 16"):
        training_images({"a.png": image(12, 20, 0)}, 16, 3)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(MODELS)
    (tmp_path / "images").mkdir()
    for i in range(3):
        _images.write_png(tmp_path / "images" / f"{i}.png", image(24, 24, i))
    return tmp_path


TRAIN = ["--model", "python:m.py:a", "--images", "images", "--crop", "16", "--batch-size", "4", "--crops-per-image",
         "2", "--width", "4", "--quiet"]  # fmt: skip


def test_train_protector_writes_a_run_that_loads_and_extends(workspace):
    config = ProtectorTrainConfig(epochs=1, crop=16, batch_size=4, crops_per_image=2, width=4)
    run = train_protector(["python:m.py:a"], "images", "prot", config, progress=False)
    assert len(run.losses) == 1 and run.resumed_from == 0
    names = {p.name for p in (workspace / "prot").iterdir()}
    assert {"config.json", "state.json", "losses.csv", "model.1.safetensors"} <= names
    loaded = load_protector("prot")
    assert loaded.specs == ["python:m.py:a"] and loaded.eps == 8 and loaded.epochs == 1
    two = ProtectorTrainConfig(**{**config.__dict__, "epochs": 2})
    longer = train_protector(["python:m.py:a"], "images", "prot", two, progress=False)
    assert longer.resumed_from == 1 and longer.losses[0] == run.losses[0] and len(longer.losses) == 2
    other = ProtectorTrainConfig(**{**config.__dict__, "lr": 0.1})
    with pytest.raises(VaelensError, match="other settings"):
        train_protector(["python:m.py:a"], "images", "prot", other, progress=False)
    with pytest.raises(VaelensError, match="not a protector directory"):
        load_protector("images")


def _vaelens(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.slow  # three fresh processes
def test_protect_train_and_protect_protector_through_the_console_script(workspace):
    trained = _vaelens("protect-train", *TRAIN, "--out", "prot", "--epochs", "1")
    assert trained.returncode == 0, trained.stderr
    assert "loss per epoch" in trained.stdout
    used = _vaelens("protect", "--protector", "prot", "--images", "images", "--out", "out", "--batch-size", "3",
                    "--quiet")  # fmt: skip
    assert used.returncode == 0, used.stderr
    for i in range(3):
        written, original = read_image(workspace / "out" / f"{i}.png"), read_image(workspace / "images" / f"{i}.png")
        assert (written.int() - original.int()).abs().max() <= 8
    summary = json.loads((workspace / "out" / "summary.json").read_text())
    assert summary["protector"] == "prot" and summary["model"] == "python:m.py:a"
    bad = _vaelens("protect-train", *TRAIN, "--out", "bad", "--crop", "64")
    assert bad.returncode == 2 and "smaller than --crop 64" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # three training processes, one killed
def test_a_killed_protect_train_resumes_bit_identically(workspace):
    args = [*TRAIN, "--epochs", "3"]
    full = _vaelens("protect-train", *args, "--out", "full")
    assert full.returncode == 0, full.stderr
    killed = _vaelens("protect-train", *args, "--out", "killed", env={"VAELENS_FAULT": "checkpoint:committed@2"})
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((workspace / "killed" / "state.json").read_text())["epoch"] == 2
    resumed = _vaelens("protect-train", *args, "--out", "killed")
    assert resumed.returncode == 0 and "resumed after epoch 2" in resumed.stdout, resumed.stderr
    for name in ("model.3.safetensors", "optim.3.safetensors", "losses.csv"):
        assert (workspace / "killed" / name).read_bytes() == (workspace / "full" / name).read_bytes(), name
    shutil.rmtree(workspace / "killed")
