"""The files a training run writes into its directory, and reading them back.

A run directory holds:
    config.json          the TrainConfig (model and data set included)
    model.E.safetensors  the model weights after the last checkpointed epoch E
    epoch-N.safetensors  the model weights after epoch N, for each N of ``save_epochs``
    optim.E.safetensors  the optimiser's tensors, for resuming
    state.json           epochs done, the weight files' names and SHA-256 (the kept epochs'
                         under ``epoch_files``), optimiser hyper-parameters, final metrics
    metrics.csv          one row per epoch

A checkpoint commits with one atomic rename, that of state.json: the new weights are first written
(and fsynced) under new names, then state.json is replaced by one naming them, then the files of
the previous checkpoint are removed. A kill at any instant leaves either the old state.json with
its files intact or the new one with its files intact. Files that no committed state names, and
temporary files of a killed writer, are removed when the run is opened again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens._io import exclusive_lock, fault_point, fsync_dir, read_json, remove_stale_temps, write_json
from vaelens._tensors import save_optimizer, save_tensors
from vaelens._version import __version__
from vaelens.training._config import TrainConfig

CONFIG, MODEL, OPTIM, STATE, METRICS = (
    "config.json",
    "model.safetensors",  # the weights' name before crash-consistent checkpoints (still read)
    "optim.safetensors",
    "state.json",
    "metrics.csv",
)
_WEIGHTS = re.compile(r"^((model|optim)(\.\d+)?|epoch-\d+)\.safetensors$")
EPOCH_FILES = "epoch_files"  # state.json: {"N": {"file": "epoch-N.safetensors", "sha256": ...}}


LOCK = ".lock"  # held (flock) by the one process that trains in the directory


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on a run directory for as long as one process trains in it.

    The operating system releases it when its holder dies, even by kill -9. A second writer is
    refused at once: reopening a run removes files no committed state names, which would pull the
    ground from under a live writer.
    """
    busy = f"{run_dir} is being trained by another vaelens process; wait for it to finish or stop it"
    with exclusive_lock(run_dir / LOCK, busy):
        yield


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


def weight_files(state: dict[str, Any]) -> tuple[str, str]:
    """The names of the model and optimiser files a committed state names."""
    return state.get("model_file", MODEL), state.get("optim_file", OPTIM)


def model_file(run_dir: str | Path) -> Path:
    """The weights file of a run's last committed checkpoint."""
    state = read_state(run_dir)
    if state is None:
        raise VaelensError(f"{run_dir} has no finished epoch yet (no {STATE}); train it first")
    return Path(run_dir) / weight_files(state)[0]


def epoch_file(run_dir: str | Path, epoch: int) -> tuple[Path, str]:
    """The weights file kept for ``epoch`` (``--save-epochs``) and its recorded SHA-256.

    The last checkpointed epoch is always available, from the run's own weights.
    """
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise VaelensError(f"{run_dir} has no finished epoch yet (no {STATE}); train it first")
    kept = state.get(EPOCH_FILES, {})
    if str(epoch) in kept:
        entry = kept[str(epoch)]
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise VaelensError(f"{run_dir / STATE} garbles the entry of epoch {epoch}; restore it or re-run training")
        return run_dir / entry["file"], checksum(entry, "sha256", run_dir)
    if epoch == state["epoch"]:
        return run_dir / weight_files(state)[0], checksum(state, "model_sha256", run_dir)
    available = sorted({int(k) for k in kept} | {int(state["epoch"])})
    raise VaelensError(
        f"{run_dir} kept no weights of epoch {epoch}; it has epochs {', '.join(map(str, available))} "
        "(train with --save-epochs to keep others)"
    )


def checksum(state: dict[str, Any], key: str, run_dir: Path) -> str:
    """A SHA-256 that state.json must hold; weights are never loaded unchecked."""
    value = state.get(key)
    if not isinstance(value, str) or len(value) != 64:
        raise VaelensError(
            f"{run_dir / STATE} has no valid {key}, so the weights cannot be checked; "
            "restore the file or re-run training"
        )
    return value


def commit_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    final: dict[str, float],
    kept: dict[str, dict[str, str]] | None = None,
    keep_epoch: bool = False,
) -> dict[str, Any]:
    """Write a checkpoint of epoch ``epoch`` and commit it with one rename; return the new state.

    ``kept`` are the epoch files earlier checkpoints kept (carried into the new state);
    ``keep_epoch`` also keeps this epoch's weights as ``epoch-E.safetensors``.
    """
    model_name, optim_name = f"model.{epoch}.safetensors", f"optim.{epoch}.safetensors"
    model_sha = save_tensors(run_dir / model_name, model.state_dict(), durable=True)
    optim_sha, groups = save_optimizer(run_dir / optim_name, optimizer, durable=True)
    kept = dict(kept or {})
    if keep_epoch:
        name = f"epoch-{epoch}.safetensors"
        kept[str(epoch)] = {"file": name, "sha256": save_tensors(run_dir / name, model.state_dict(), durable=True)}
    fault_point("checkpoint:weights-written")
    state = {
        "vaelens_version": __version__, "epoch": epoch, "model_file": model_name, "model_sha256": model_sha,
        "optim_file": optim_name, "optim_sha256": optim_sha, "param_groups": groups, "final": final,
        EPOCH_FILES: kept,
    }  # fmt: skip
    write_json(run_dir / STATE, state, durable=True)  # the commit point
    fault_point("checkpoint:committed")
    remove_uncommitted(run_dir, state)
    return state


def remove_uncommitted(run_dir: Path, state: dict[str, Any] | None) -> None:
    """Delete temporary files and weight files that the committed state does not name."""
    removed = remove_stale_temps(run_dir)
    keep = set(weight_files(state)) if state is not None else set()
    if state is not None:
        keep |= {str(entry.get("file")) for entry in state.get(EPOCH_FILES, {}).values() if isinstance(entry, dict)}
    for p in run_dir.iterdir():
        if _WEIGHTS.match(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        fsync_dir(run_dir)
