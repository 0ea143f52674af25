"""Run directories and safe checkpoints: JSON for configs and state, safetensors for tensors.

Nothing here unpickles: safetensors holds raw tensor bytes and a JSON header, so a malicious file
cannot run code. Every weights file's SHA-256 is recorded in ``state.json``; a file that was
truncated, corrupted or swapped is rejected with an error naming it.

A run directory holds:
    config.json        the TrainConfig (model and data set included)
    model.safetensors  the model weights after the last finished epoch
    optim.safetensors  the optimiser's tensors, for resuming
    state.json         epochs done, checksums, optimiser hyper-parameters, final metrics
    metrics.csv        one row per epoch
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaelens._errors import VaelensError
from vaelens._io import atomic_write, write_json

CONFIG, MODEL, OPTIM, STATE, METRICS = (
    "config.json",
    "model.safetensors",
    "optim.safetensors",
    "state.json",
    "metrics.csv",
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, or raise a one-line error naming the file."""
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; is this a vaelens run directory?")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VaelensError(f"{path} is not valid JSON ({e}); restore it or re-run training") from None
    if not isinstance(obj, dict):
        raise VaelensError(f"{path} must hold a JSON object; restore it or re-run training")
    return obj


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors atomically as safetensors; return the file's SHA-256."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return sha256(path)


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its checksum, with one-line errors naming the file."""
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; the run has no finished epoch, train it first")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise VaelensError(
            f"{path} does not match the checksum in {STATE}: it was modified, truncated or "
            "corrupted; restore it or re-run training"
        )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:160]
        raise VaelensError(f"{path} is not a valid safetensors file ({msg}); restore it or re-run training") from None


def load_state_dict_checked(module: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights into a module, with a one-line error on missing, extra or misshapen keys."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", bad))
            if keys
        )
        raise VaelensError(f"{path} does not fit the model in {CONFIG} ({detail}); the weights belong to another model")
    module.load_state_dict(tensors)


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> tuple[str, list[dict]]:
    """Save an optimiser's tensors as safetensors; return (sha256, JSON-able param groups)."""
    sd = optimizer.state_dict()
    tensors = {
        f"{idx}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
        for idx, state in sd["state"].items()
        for name, value in state.items()
    }
    return save_tensors(path, tensors), sd["param_groups"]


def load_optimizer(
    path: Path, optimizer: torch.optim.Optimizer, param_groups: list[dict], expected_sha256: str
) -> None:
    tensors = load_tensors(path, expected_sha256)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (ValueError, KeyError) as e:
        raise VaelensError(f"{path} does not fit the optimiser ({e}); re-run training") from None


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a trained reference model from its run directory, in eval mode.

    Arguments:
        run_dir: a directory written by ``vaelens.train`` / ``vaelens train``.
        device: where to put the model.

    Returns:
        The model with the weights of the last finished epoch, in eval mode.
    """
    from vaelens.models import build_model

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = read_json(run_dir / STATE)
    model = build_model(config.model)
    tensors = load_tensors(run_dir / MODEL, state.get("model_sha256"))
    load_state_dict_checked(model, tensors, run_dir / MODEL)
    return model.to(device).eval()


def read_config(run_dir: str | Path):
    """The ``TrainConfig`` of a run directory, with one-line errors naming the file."""
    from vaelens.training import TrainConfig

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VaelensError(f"run directory {run_dir} does not exist; train one with `vaelens train`")
    path = run_dir / CONFIG
    try:
        return TrainConfig.from_dict(read_json(path))
    except (VaelensError, TypeError) as e:
        if str(e).startswith(str(path)):
            raise
        raise VaelensError(f"{path}: {e}; restore it or re-run training") from None


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    write_json(run_dir / STATE, state)
