"""Fault injection: kill -9 inside the checkpoint window and at random moments, then the same
command again. Nothing may be lost, nothing duplicated, and the result must be bit-identical to an
uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vaelens
from vaelens.training import STATE

TRAIN = """
import sys
from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train
model = ModelConfig("mlp", (1, 8, 8), latent_dim=3, hidden=(32, 16))
config = TrainConfig(dataset="digits", model=model, epochs=int(sys.argv[2]), batch_size=64, seed=0)
train(config, sys.argv[1], progress=False, checkpoint_every=0)
"""


def _train(out: Path, epochs: int, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VAELENS_FAULT": fault or ""}
    return subprocess.run(
        [sys.executable, "-c", TRAIN, str(out), str(epochs)], env=env, capture_output=True, timeout=300
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return vaelens.load(run).state_dict()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "full"
    assert _train(out, 4).returncode == 0
    return _weights(out)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["checkpoint:weights-written@2", "checkpoint:committed@2"])
def test_kill_inside_the_checkpoint_window_loses_nothing(tmp_path, uninterrupted, fault):
    out = tmp_path / "run"
    killed = _train(out, 4, fault)
    assert killed.returncode == -signal.SIGKILL
    state = vaelens.training.read_state(out)
    assert state is not None and state["epoch"] in (1, 2)  # the last committed checkpoint
    assert vaelens.load(out) is not None  # what is committed always loads
    assert _train(out, 4).returncode == 0
    resumed = _weights(out)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "metrics.csv", "model.4.safetensors", "optim.4.safetensors", STATE]
    epochs = [line.split(",")[0] for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]  # integers, each once


@pytest.mark.slow
def test_kill_at_random_moments_then_resume_is_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "run"
    rng = random.Random(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(out), "4"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(1.5, 4.0))  # start-up is ~1.5 s; the run is ~1-2 s after it
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _train(out, 4).returncode == 0
    resumed = _weights(out)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert not list(out.glob(".*.tmp"))
