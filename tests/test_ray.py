"""The Ray executor, on this machine: a private local instance and a `ray start --head` cluster.

Sweeps run in subprocesses through the CLI, as users run them; each test leaves no Ray process
behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from vaelens.experiments import SweepConfig  # noqa: E402

EXE = str(Path(sys.executable).parent / "vaelens")
SWEEP = ["sweep", "--dataset", "digits", "--betas", "0.5,2", "--epochs", "3", "--n", "8", "--eps", "0.5",
         "--steps", "2", "--latent-dim", "3", "--quiet"]  # fmt: skip
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _sweep(out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *SWEEP, "--out", str(out), *extra], capture_output=True, text=True,
                          env=env or ENV, timeout=600)  # fmt: skip


def _ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if ("raylet" in line or "gcs_server" in line) and "ps -eo" not in line]


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    assert not _ray_processes(), "a Ray instance was running before the test"
    yield
    assert not _ray_processes(), "the test left Ray processes behind"


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "s"
    proc = _sweep(out)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_results(local_sweep, tmp_path):
    proc = _sweep(tmp_path / "ray", "--executor", "ray")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ray" / "results.csv").read_text() == (local_sweep / "results.csv").read_text()
    assert "done" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_sweep_resumed_under_the_other_executor_redoes_nothing(local_sweep, tmp_path):
    out = tmp_path / "s"
    shutil.copytree(local_sweep, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "results.csv"}
    proc = _sweep(out, "--executor", "ray", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "│    0 │                          2 │       0 │      0 │" in proc.stdout  # all skipped
    changed = [p for p, t in stamps.items() if p.exists() and p.stat().st_mtime_ns != t and p.name != "sweep.json"]
    assert not changed, changed


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_resumes(local_sweep, tmp_path):
    env = {**ENV, "VAELENS_FAULT": "train:epoch-end@2", "VAELENS_FAULT_ONCE": str(tmp_path / "fired")}
    proc = _sweep(tmp_path / "s", "--executor", "ray", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fired").exists()  # the fault did kill a worker
    assert "│    2 │                          0 │       1 │      0 │" in proc.stdout  # one unit retried
    for metrics in (tmp_path / "s" / "runs").glob("*/metrics.csv"):
        with open(metrics) as f:
            assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]  # none missing, none twice
    assert (tmp_path / "s" / "results.csv").read_text() == (local_sweep / "results.csv").read_text()


@pytest.mark.slow
def test_a_user_error_is_reported_not_retried_and_the_others_go_on(tmp_path):
    out = tmp_path / "s"
    bad = out / "runs" / "digits_mlp_beta0.5_seed0"
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("not a run")  # training refuses a foreign directory: a user error
    same = SweepConfig.from_dict({"datasets": ["digits"], "betas": [0.5, 2.0], "epochs": 3, "n": 8, "eps": [0.5],
                                  "pgd_steps": 2, "latent_dim": 3})  # fmt: skip
    (out / "sweep.json").write_text(json.dumps(same.to_dict()))  # the sweep that the command resumes
    proc = _sweep(out, "--executor", "ray")
    assert proc.returncode == 2, proc.stderr
    assert "failed: digits_mlp_beta0.5_seed0:" in proc.stderr and "is not a vaelens run directory" in proc.stderr
    assert "│    1 │                          0 │       0 │      1 │" in proc.stdout
    assert (out / "runs" / "digits_mlp_beta2_seed0" / "result.json").is_file()  # the other unit finished
    attempts = list((out / ".attempts").rglob("digits_mlp_beta0.5_seed0"))
    assert len(attempts) == 1 and len(attempts[0].read_text().split()) == 1  # tried once


def test_the_shared_filesystem_check(tmp_path):
    from vaelens import VaelensError
    from vaelens.experiments._ray import _check_shared

    class Elsewhere:  # a cluster whose workers write into their own disks
        def remote(self, **_):
            return lambda fn: type("F", (), {"remote": staticmethod(lambda *a: ("node-7", a))})

        def get(self, refs, timeout=None):
            return [ref[0] for ref in refs]

    with pytest.raises(VaelensError, match="is not shared with the Ray workers: a task on node-7 wrote"):
        _check_shared(Elsewhere(), tmp_path)


def test_without_ray_installed_the_error_names_the_extra(run_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    code, stdout, stderr = run_cli(*SWEEP, "--out", tmp_path / "s", "--executor", "ray")
    assert code == 2 and "pip install 'vaelens[ray]'" in stderr and "Traceback" not in stdout + stderr


@pytest.mark.slow
def test_a_ray_start_head_cluster_with_address_auto(local_sweep, tmp_path):
    ray = str(Path(sys.executable).parent / "ray")
    start = subprocess.run([ray, "start", "--head", "--num-cpus", "2", "--include-dashboard", "false",
                            "--disable-usage-stats"], capture_output=True, text=True, env=ENV, timeout=120)  # fmt: skip
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        proc = _sweep(tmp_path / "s", "--executor", "ray", "--ray-address", "auto")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "s" / "results.csv").read_text() == (local_sweep / "results.csv").read_text()
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=ENV, timeout=120)
