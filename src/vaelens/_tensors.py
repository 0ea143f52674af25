"""Safe tensor files: safetensors with a SHA-256 checksum, for weights and optimiser state.

Nothing here unpickles: safetensors holds raw tensor bytes and a JSON header, so a malicious file
cannot run code. Every writer returns the file's SHA-256 and every reader can check it, so a file
that was truncated, corrupted or swapped is rejected with an error naming it. Training writes its
checkpoints through this module; it knows nothing of run directories.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vaelens._errors import VaelensError
from vaelens._io import atomic_write


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], durable: bool = False) -> str:
    """Write tensors atomically as safetensors (fsynced if ``durable``); return the file's SHA-256."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp)
        except SafetensorError as e:  # an I/O fault inside safetensors: hand it on as the OSError it is
            code = re.search(r"os error (\d+)", str(e))
            if code:
                raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
            raise VaelensError(f"could not write {path} ({' '.join(str(e).split())[:160]})") from None

    atomic_write(path, write, durable)
    return sha256(path)


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its checksum, with one-line errors naming the file."""
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; the run has no finished epoch, train it first")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise VaelensError(
            f"{path} does not match its recorded checksum: it was modified, truncated or "
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
        raise VaelensError(f"{path} does not fit the model ({detail}); the weights belong to another model")
    module.load_state_dict(tensors)


def save_optimizer(path: Path, optimizer: torch.optim.Optimizer, durable: bool = False) -> tuple[str, list[dict]]:
    """Save an optimiser's tensors as safetensors; return (sha256, JSON-able param groups)."""
    sd = optimizer.state_dict()
    tensors = {
        f"{idx}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
        for idx, state in sd["state"].items()
        for name, value in state.items()
    }
    return save_tensors(path, tensors, durable), sd["param_groups"]


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
