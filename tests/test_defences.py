"""The defence interface: the loop knows no defence by name; the noise defence; the registry."""

from __future__ import annotations

import csv
import math
import os
import subprocess
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import vaelens
from vaelens.experiments import SweepConfig
from vaelens.training import (
    DEFENCES,
    Defence,
    DefenceBatch,
    DefenceLoss,
    NoDefence,
    NoiseConfig,
    defence_from_dict,
    read_config,
    train,
)

from conftest import tiny_config


def _metrics(run) -> list[dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


@dataclass(frozen=True)
class _Constant(Defence):
    """A defence the library has never heard of: it adds a constant to every step's loss."""

    name: ClassVar[str] = "constant"
    value: float = 5.0

    def loss(self, batch: DefenceBatch) -> DefenceLoss:
        return DefenceLoss((torch.tensor(self.value),), {})


def test_the_loop_takes_any_defence_behind_the_interface(tmp_path):
    train(tiny_config(defence=_Constant()), tmp_path / "c", progress=False)
    for r in _metrics(tmp_path / "c"):
        assert math.isclose(r["loss"], r["recon"] + r["beta"] * r["kl"] + 5.0, rel_tol=1e-5)


def test_every_defence_round_trips_through_its_dict():
    for name, cls in DEFENCES.items():
        defence = cls()
        assert defence.name == name
        assert defence_from_dict(defence.to_dict()) == defence
    assert defence_from_dict(None) == NoDefence()
    with pytest.raises(vaelens.VaelensError, match="must be one of"):
        defence_from_dict({"name": "dropout"})


def test_noise_inputs_are_the_clean_ones_plus_gaussian_noise():
    x = torch.rand(4000, 1, 8, 8, dtype=torch.float64)
    noisy = NoiseConfig(sigma=0.3).inputs(x, torch.Generator().manual_seed(0))
    delta = noisy - x
    assert noisy.dtype == x.dtype and noisy.shape == x.shape
    assert abs(delta.mean().item()) < 0.01 and abs(delta.std().item() - 0.3) < 0.01


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan])
def test_bad_noise_sigma(sigma):
    with pytest.raises(vaelens.VaelensError, match="sigma"):
        NoiseConfig(sigma)


def test_noise_training_is_deterministic_resumes_and_differs_from_plain(tmp_path):
    config = tiny_config(epochs=2, defence=NoiseConfig(0.25))
    a = train(config, tmp_path / "a", progress=False, checkpoint_every=0).model.state_dict()
    b = train(config, tmp_path / "b", progress=False).model.state_dict()
    plain = train(tiny_config(epochs=2), tmp_path / "p", progress=False).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], plain[k]) for k in a)
    assert read_config(tmp_path / "a").defence == NoiseConfig(0.25)


def test_noise_defence_through_the_console_script(tmp_path):
    out = tmp_path / "n"
    argv = ["vaelens", "train", "--out", str(out), "--dataset", "digits", "--latent-dim", "3", "--hidden", "16",
            "--epochs", "1", "--quiet", "--defence", "noise", "--noise-sigma", "0.1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert read_config(out).defence == NoiseConfig(0.1)
    assert "noise sigma" in done.stdout
    bad = subprocess.run([*argv[:-1], "0"], capture_output=True, text=True, env=os.environ.copy())
    assert bad.returncode == 2 and "--noise-sigma" in bad.stderr and "Traceback" not in bad.stderr


def test_sweeps_take_the_noise_defence():
    config = SweepConfig(betas=(1.0,), defences=("none", "noise"), noise_sigma=0.5)
    units = config.units()
    assert [u.defence for u in units] == ["none", "noise"]
    assert units[1].name.endswith("_noise_seed0")
    assert config.defence_config("noise") == NoiseConfig(0.5)
    with pytest.raises(vaelens.VaelensError, match="--noise-sigma"):
        SweepConfig(noise_sigma=-1.0)
