"""Reading run directories: the trained model, its summary, and the inputs to evaluate it on.

Training writes a run directory (``vaelens.training``); everything that reads one back for
evaluation lives here, above the library, so that the library's functions take a model and a
batch and know nothing of directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import check_finite, resolve_device
from vaelens._tensors import load_state_dict_checked, load_tensors
from vaelens.data import load_dataset, take
from vaelens.models import build_model
from vaelens.training import STATE, checksum, read_config, read_state, weight_files


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a trained reference model from its run directory, in eval mode.

    Arguments:
        run_dir: a directory written by ``vaelens.train`` / ``vaelens train``.
        device: where to put the model.

    Returns:
        The model with the weights of the last checkpointed epoch, in eval mode.

    Examples::

        >>> model = vaelens.load("runs/beta1")           # doctest: +SKIP
        >>> posterior = model.encode(x)                  # x: (B, 1, 28, 28) -> mu, logvar: (B, k)
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise VaelensError(f"{run_dir} has no finished epoch yet (no {STATE}); train it first")
    model = build_model(config.model)
    path = run_dir / weight_files(state)[0]
    if not path.is_file():  # a checkpoint committed between reading state.json and opening the file
        state = read_state(run_dir) or state
        path = run_dir / weight_files(state)[0]
    tensors = load_tensors(path, checksum(state, "model_sha256", run_dir))
    load_state_dict_checked(model, tensors, path)
    for name, value in tensors.items():
        if value.is_floating_point():
            check_finite(value, f"the weights {name} in {path}")
    return model.to(resolve_device(device)).eval()


def run_info(run_dir: str | Path) -> dict[str, Any]:
    """A run's config, epochs done and final metrics, as one JSON-able dict."""
    config = read_config(run_dir)
    state = read_state(run_dir) or {"epoch": 0, "final": {}}
    return {
        "run": str(run_dir),
        "config": config.to_dict(),
        "epochs_done": state["epoch"],
        "final": state.get("final", {}),
    }


class RunInputs(NamedTuple):
    """A run's model and the inputs to evaluate it on."""

    model: torch.nn.Module
    dataset: str  # the data set the inputs come from
    x: torch.Tensor  # (N, *input_shape) in [0, 1], on the CPU
    labels: torch.Tensor  # (N,)


def load_run_inputs(
    run_dir: str | Path, dataset: str | None = None, split: str = "test", n: int = 1000, device: str = "cpu"
) -> RunInputs:
    """A run's model, and the first n inputs and labels of a split of its data set (or another)."""
    if not isinstance(n, int) or n < 1:
        raise VaelensError(f"n (inputs to evaluate, --n) must be >= 1; got {n}")
    config = read_config(run_dir)
    model = load(run_dir, device)
    name = dataset or config.dataset
    x, labels = take(load_dataset(name, split, config.data_root, config.image_size, config.image_channels), n)
    return RunInputs(model, name, x, labels)
