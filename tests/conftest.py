"""Shared fixtures: tiny models and tiny trained runs on the offline digits set."""

from __future__ import annotations

import sys

import pytest
import torch

from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train

torch.set_num_threads(2)


def tiny_config(**overrides) -> TrainConfig:
    """A training config that runs in about a second on digits (1x8x8)."""
    model = ModelConfig("mlp", (1, 8, 8), latent_dim=3, hidden=(32, 16))
    base = dict(dataset="digits", model=model, epochs=2, batch_size=64, beta=1.0, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A trained tiny run directory (read-only for tests: copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    train(tiny_config(), out, progress=False)
    return out


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """A small MLP VAE trained for a few epochs on the real mnist-5k images (about 5 s)."""
    out = tmp_path_factory.mktemp("runs") / "mnist"
    model = ModelConfig("mlp", (1, 28, 28), latent_dim=8, hidden=(128, 64))
    train(TrainConfig(dataset="mnist-5k", model=model, epochs=4, batch_size=64), out, progress=False)
    return out


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the vaelens CLI in-process; return (exit code, stdout, stderr)."""
    from vaelens.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["vaelens", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return _run
