"""Reading run directories: the trained model, its summary, and the inputs to evaluate it on.

Training writes a run directory (``vaelens.training``); everything that reads one back for
evaluation lives here, above the library, so that the library's functions take a model and a
batch and know nothing of directories.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import check_finite, resolve_device
from vaelens._tensors import load_state_dict_checked, load_tensors
from vaelens.data import load_dataset, take
from vaelens.models import build_model
from vaelens.training import CONFIG, STATE, checksum, epoch_file, read_config, read_state, weight_files

_EPOCH_REF = re.compile(r"^(?P<run>.+)@(?P<epoch>[^@/]*)$")


def parse_run_ref(text: str | Path) -> tuple[Path, int | None]:
    """A run reference ``RUN`` or ``RUN@N`` (the weights kept after epoch N) as (run directory, N or None).

    A run directory whose own name contains ``@`` is taken as it is; a folder of that name that is not a
    run (a sweep's evaluation of epoch N) does not hide the reference.

    Examples::

        >>> parse_run_ref("runs/beta1@20")
        (PosixPath('runs/beta1'), 20)
        >>> parse_run_ref("runs/beta1")
        (PosixPath('runs/beta1'), None)
    """
    text = str(text)
    match = _EPOCH_REF.match(text)
    literal = Path(text)
    # A folder named RUN@N that is itself a run is taken as it is; one that is not (a sweep's
    # evaluation of RUN's epoch N, say) does not hide the reference to RUN's epoch N.
    if match is None or (
        literal.is_dir() and ((literal / CONFIG).is_file() or not (Path(match["run"]) / CONFIG).is_file())
    ):
        return literal, None
    epoch = match["epoch"]
    if not epoch.isdigit() or int(epoch) < 1:
        raise VaelensError(f"{text!r}: the epoch after @ must be a positive integer, as in runs/beta1@20")
    return Path(match["run"]), int(epoch)


def load(run_dir: str | Path, device: str | torch.device = "cpu", epoch: int | None = None) -> torch.nn.Module:
    """Rebuild a trained reference model from its run directory, in eval mode.

    Arguments:
        run_dir: a directory written by ``vaelens.train`` / ``vaelens train``.
        device: where to put the model.
        epoch: the weights kept after this epoch (``--save-epochs``); None: the last checkpoint.

    Returns:
        The model with the weights of that epoch, in eval mode.

    Examples::

        >>> model = vaelens.load("runs/beta1")           # doctest: +SKIP
        >>> early = vaelens.load("runs/beta1", epoch=5)  # doctest: +SKIP
        >>> posterior = model.encode(x)                  # x: (B, 1, 28, 28) -> mu, logvar: (B, k)
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise VaelensError(f"{run_dir} has no finished epoch yet (no {STATE}); train it first")
    model = build_model(config.model)
    if epoch is not None:
        if not isinstance(epoch, int) or epoch < 1:
            raise VaelensError(f"epoch must be a positive integer; got {epoch!r}")
        path, expected = epoch_file(run_dir, epoch)
    else:
        path = run_dir / weight_files(state)[0]
        if not path.is_file():  # a checkpoint committed between reading state.json and opening the file
            state = read_state(run_dir) or state
            path = run_dir / weight_files(state)[0]
        expected = checksum(state, "model_sha256", run_dir)
    tensors = load_tensors(path, expected)
    load_state_dict_checked(model, tensors, path)
    for name, value in tensors.items():
        if value.is_floating_point():
            check_finite(value, f"the weights {name} in {path}")
    return model.to(resolve_device(device)).eval()


def output_dir(run: str | Path, name: str) -> Path:
    """Where a command writes its output for a run reference by default: ``RUN/NAME``, or
    ``RUN/NAME@N`` for ``RUN@N``, so that the evaluations of different epochs never mix."""
    run_dir, epoch = parse_run_ref(run)
    return run_dir / (name if epoch is None else f"{name}@{epoch}")


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
    run: str | Path, dataset: str | None = None, split: str = "test", n: int = 1000, device: str = "cpu"
) -> RunInputs:
    """A run's model, and the first n inputs and labels of a split of its data set (or another).

    ``run`` is a run directory, or ``RUN@N`` for the weights kept after epoch N (``parse_run_ref``).
    """
    if not isinstance(n, int) or n < 1:
        raise VaelensError(f"n (inputs to evaluate, --n) must be >= 1; got {n}")
    run_dir, epoch = parse_run_ref(run)
    config = read_config(run_dir)
    model = load(run_dir, device, epoch)
    name = dataset or config.dataset
    x, labels = take(load_dataset(name, split, config.data_root, config.image_size, config.image_channels), n)
    return RunInputs(model, name, x, labels)
