"""The files a training run writes into its directory, and reading them back.

A run directory holds:
    config.json        the TrainConfig (model and data set included)
    model.safetensors  the model weights after the last checkpointed epoch
    optim.safetensors  the optimiser's tensors, for resuming
    state.json         epochs done, checksums, optimiser hyper-parameters, final metrics
    metrics.csv        one row per epoch

Tensors go through ``vaelens._tensors`` (safetensors with SHA-256); ``state.json`` is the commit
point that names the checksums of the weights it belongs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelens._errors import VaelensError
from vaelens._io import read_json, write_json
from vaelens.training._config import TrainConfig

CONFIG, MODEL, OPTIM, STATE, METRICS = (
    "config.json",
    "model.safetensors",
    "optim.safetensors",
    "state.json",
    "metrics.csv",
)


def read_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` of a run directory, with one-line errors naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelensError(f"run directory {run_dir} does not exist; train one with `vaelens train`")
    path = run_dir / CONFIG
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; is {run_dir} a vaelens run directory?")
    try:
        return TrainConfig.from_dict(read_json(path))
    except (VaelensError, TypeError) as e:
        if str(e).startswith(str(path)):
            raise
        raise VaelensError(f"{path}: {e}; restore it or re-run training") from None


def read_state(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``state.json``, or None when no epoch has been checkpointed yet."""
    path = Path(run_dir) / STATE
    return read_json(path) if path.exists() else None


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_json(run_dir / STATE, state)
