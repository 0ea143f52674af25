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
    names = sorted(p.name for p in out.iterdir() if p.name != ".lock")
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


EXE = str(Path(sys.executable).parent / "vaelens")
SWEEP = ["sweep", "--dataset", "digits", "--betas", "0.5,1,2", "--epochs", "2", "--n", "12", "--eps", "0.5",
         "--steps", "2", "--latent-dim", "3", "--jobs", "2", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_sweep_with_two_jobs_killed_then_rerun_equals_uninterrupted(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert subprocess.run([EXE, *SWEEP, "--out", str(full)], capture_output=True).returncode == 0
    proc = subprocess.Popen([EXE, *SWEEP, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(1).uniform(6.0, 12.0))  # after start-up, somewhere in the units
    proc.send_signal(signal.SIGKILL)  # the parent only: its workers must die with it
    proc.wait()
    time.sleep(2.0)
    rerun = subprocess.run([EXE, *SWEEP, "--out", str(killed)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert (killed / "results.csv").read_text() == (full / "results.csv").read_text()
    for run in (full / "runs").iterdir():
        for name in ("samples.csv", "result.json", "audit/scores.csv", "attack-pgd/damage.csv"):
            assert (killed / "runs" / run.name / name).read_bytes() == (run / name).read_bytes(), (run.name, name)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["audit", "attack"])
def test_audit_and_attack_killed_then_rerun_equal_uninterrupted(tmp_path, command):
    from conftest import tiny_config

    vaelens.train(tiny_config(), tmp_path / "run", progress=False)
    extra = ["--kind", "stochastic,fisher,output", "--probe-n", "40"] if command == "audit" else ["--steps", "200"]
    args = [EXE, command, str(tmp_path / "run"), "--n", "200", "--quiet", *extra]
    assert subprocess.run([*args, "--out", str(tmp_path / "full")], capture_output=True).returncode == 0
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(random.Random(2).uniform(2.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from vaelens._outputs import is_complete

    finished = is_complete(tmp_path / "killed", command)
    rerun = subprocess.run([*args, "--out", str(tmp_path / "killed")], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    table = "scores.csv" if command == "audit" else "damage.csv"
    assert (tmp_path / "killed" / table).read_bytes() == (tmp_path / "full" / table).read_bytes()
    assert is_complete(tmp_path / "killed", command)
    assert not finished or (tmp_path / "killed" / table).exists()  # if it looked finished, it was


@pytest.mark.slow
def test_report_killed_then_rerun_is_complete_and_equal(tmp_path):
    out = tmp_path / "s"
    sweep = [EXE, "sweep", "--dataset", "digits", "--betas", "0.5,2", "--mixup", "both", "--epochs", "1", "--n", "8",
             "--eps", "0.5,1", "--steps", "2", "--latent-dim", "3", "--out", str(out), "--quiet"]  # fmt: skip
    assert subprocess.run(sweep, capture_output=True).returncode == 0
    assert subprocess.run([EXE, "report", str(out)], capture_output=True).returncode == 0
    reference = (out / "report" / "trend.csv").read_bytes()
    (out / "report.html").unlink()
    proc = subprocess.Popen([EXE, "report", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(3).uniform(3.0, 6.0))  # start-up, then somewhere among the figures
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    page = out / "report.html"
    assert not page.exists() or page.read_text().rstrip().endswith("</html>")  # never half-written
    assert subprocess.run([EXE, "report", str(out)], capture_output=True).returncode == 0
    assert page.read_text().rstrip().endswith("</html>")
    assert (out / "report" / "trend.csv").read_bytes() == reference
    assert not list(out.rglob(".*.tmp"))  # the rerun cleaned up
