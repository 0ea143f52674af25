"""Protection's run layer (docs/method.md section 9): several ``--model`` specs loaded and labelled,
and the protector's run directory (``vaelens protect-train``: checkpoints, resume, loading).

A label names an encoder in protect.csv's column blocks and in the transfer table: the last part
of its spec ("beta1@20" for runs/beta1@20, "tinyvae.py:make" for python:tinyvae.py:make), made
unique with "#2", "#3", ... when two specs end alike.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens._io import TMP_SUFFIX, read_json, write_csv, write_json
from vaelens._outputs import check_out_path
from vaelens._progress import Ticker, progress_bar
from vaelens._tensors import load_optimizer, load_state_dict_checked, load_tensors
from vaelens.adapters import fit_model, image_channels
from vaelens.evaluation import (
    Perturb,
    ProtectConfig,
    ProtectorTrainConfig,
    check_encoders,
    check_not_images,
    check_precision,
    protector_perturb,
    read_images,
    train_epoch,
    training_images,
)
from vaelens.experiments._models import check_not_model, load_model
from vaelens.models import ProtectorNet, ProtectorNetConfig
from vaelens.training import (
    CONFIG,
    LOCK,
    checksum,
    commit_checkpoint,
    read_state,
    remove_uncommitted,
    run_lock,
    weight_files,
)

_PREFIX = re.compile(r"^(diffusers|pythae|python):")


def spec_label(spec: str) -> str:
    """A short label for a model spec: the last component of its path (``/`` never in it)."""
    body = _PREFIX.sub("", str(spec)).rstrip("/\\")
    return re.split(r"[/\\]", body)[-1] or str(spec)


def spec_labels(specs: Sequence[str]) -> list[str]:
    """One label per spec, in order, unique ("#2" and on for repeats)."""
    labels: list[str] = []
    for spec in specs:
        label, n = spec_label(spec), 2
        while label in labels:
            label, n = f"{spec_label(spec)}#{n}", n + 1
        labels.append(label)
    return labels


def load_encoders(
    specs: Sequence[str],
    device: str = "cpu",
    allow_pickle: bool = False,
    latent_space: str = "diffusion",
    checkpointing: bool = False,
    taken: Sequence[str] = (),
) -> dict[str, torch.nn.Module]:
    """{label: VAE} for each spec (``load_model``); labels avoid those already ``taken``."""
    labels = spec_labels([*taken, *specs])[len(taken) :]
    return {
        label: load_model(spec, device, allow_pickle, latent_space, checkpointing)
        for label, spec in zip(labels, specs, strict=True)
    }


PROTECTOR_COMMAND = "protect-train"
LOSSES = "losses.csv"


@dataclass(frozen=True)
class LoadedProtector:
    """A trained protector, ready for ``protect``.

    Arguments:
        net: the ``ProtectorNet`` (eval mode) on the device asked for.
        specs: the ``--model`` specs it was trained against (``protect --protector`` evaluates on
            them when no ``--model`` is given).
        eps: its budget in 8-bit units.
        epochs: the epochs it was trained for.
    """

    net: ProtectorNet
    specs: list[str]
    eps: float
    epochs: int

    def perturb(self, config: ProtectConfig, refine_steps: int = 0) -> Perturb:
        """``protect``'s ``perturb``: this protector's forward pass, then ``refine_steps`` Auto-PGD steps."""
        return protector_perturb(self.net, config, refine_steps)


@dataclass(frozen=True)
class ProtectorRun:
    """A finished ``protect-train``: where it is, the mean loss of each epoch, and the epochs resumed past."""

    out: Path
    losses: list[float]
    resumed_from: int


def _record(config: ProtectorTrainConfig, net: ProtectorNetConfig, specs: Sequence[str], images: str) -> dict:
    return {"command": PROTECTOR_COMMAND, "protector": {**asdict(config), "robust": list(config.robust)},
            "net": asdict(net), "models": list(specs), "images": images}  # fmt: skip


def _check_owned(out: Path, record: dict) -> None:
    """Refuse, in one line, an ``out`` that holds anything but this run's protector: a directory
    without a protect-train config.json is this run's only while empty (a killed claim's lock or
    temporaries aside), so that no file vaelens did not write is ever replaced or removed."""
    path = out / CONFIG
    if not path.exists():
        theirs = (
            [
                p.name
                for p in out.iterdir()
                if p.name != LOCK and not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
            ]
            if out.is_dir()
            else []
        )
        if theirs:
            raise VaelensError(
                f"{out} is not empty ({sorted(theirs)[0]}) and was not written by `vaelens protect-train`; "
                "choose another --out (protect-train never writes over files it did not create)"
            )
        return
    old = read_json(path)
    if old.get("command") != PROTECTOR_COMMAND:
        raise VaelensError(f"{out} is not a protector directory (its {CONFIG} is another's); choose another --out")

    def same(r: dict) -> dict:  # the photo folder by where it is, however it was typed
        return {
            k: str(Path(v).resolve()) if k == "images" and isinstance(v, str) else v
            for k, v in r.items()
            if k != "protector"
        }

    if same(old) != same(record):
        raise VaelensError(f"{out} holds a protector of other models or images; choose another --out")
    if {**old.get("protector", {}), "epochs": 0} != {**record["protector"], "epochs": 0}:
        raise VaelensError(f"{out} holds a protector trained with other settings; choose another --out")


def _claim(out: Path, record: dict) -> None:
    """Write config.json, or check that the one there is this run's (then the run resumes)."""
    _check_owned(out, record)
    if (out / CONFIG).exists():  # a shorter --epochs trains nothing more and leaves the record's count alone
        done = int(read_json(out / CONFIG).get("protector", {}).get("epochs", 0))
        record = {**record, "protector": {**record["protector"], "epochs": max(done, record["protector"]["epochs"])}}
    write_json(out / CONFIG, record, durable=True)  # a longer --epochs extends the run


def _losses(out: Path, epochs: int) -> list[float]:
    path = out / LOSSES
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)][:epochs]


def _restore(out: Path, net: ProtectorNet, optimizer: torch.optim.Optimizer) -> int:
    """Load the last committed checkpoint into net and optimizer; return its epoch (0: none)."""
    state = read_state(out)
    remove_uncommitted(out, state)  # what a writer killed mid-checkpoint left behind
    if state is None:
        return 0
    weights, optim = weight_files(state)
    load_state_dict_checked(net, load_tensors(out / weights, checksum(state, "model_sha256", out)), out / weights)
    load_optimizer(out / optim, optimizer, state["param_groups"], checksum(state, "optim_sha256", out))
    return int(state["epoch"])


def _tick(ticker: Ticker, epoch: int, loss: float) -> None:
    ticker.tick(f"epoch {epoch} loss {loss:.3f}")


def train_protector(
    specs: Sequence[str],
    images: str | Path,
    out: str | Path,
    config: ProtectorTrainConfig | None = None,
    progress: bool = True,
    device: str = "cpu",
    **load: Any,
) -> ProtectorRun:
    """Train a protector against the encoders ``specs`` name on random crops of the images in
    ``images``; write it to ``out`` (config.json, weights and optimiser as safetensors with
    SHA-256 in state.json, losses.csv), checkpointed every epoch. Run again after a kill, it
    resumes from the last checkpoint and finishes bit-identical to an uninterrupted run.

    Examples::

        >>> run = train_protector(["diffusers:sd-vae-ft-mse"], "photos/", "protector/", ProtectorTrainConfig())
        >>> run.losses[-1] < run.losses[0]
        True
    """
    config = config or ProtectorTrainConfig()
    check_not_images(out, images)  # a run never lands among the photos it learns from, nor in a model
    for spec in specs:
        check_not_model(out, spec)
    encoders = load_encoders(specs, device, **load)
    check_encoders(encoders, {})  # protect refuses encoders of different channels: refuse them before training
    check_precision(config.precision, encoders)
    channels = image_channels(next(iter(encoders.values())))
    pictures = training_images(read_images(images, written=False), config.crop, channels)
    fitted = [
        fit_model(m, (channels, config.crop, config.crop), f"a {config.crop}-pixel crop") for m in encoders.values()
    ]
    net_config = ProtectorNetConfig(channels=channels, width=config.width, eps=config.eps)
    out, record = check_out_path(out), _record(config, net_config, specs, str(Path(images).resolve()))
    _check_owned(out, record)  # before the directory or its lock is touched
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        _claim(out, record)
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            net = ProtectorNet(net_config).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        start = _restore(out, net, optimizer)
        losses = _losses(out, start)
        steps = -(-len(pictures) * config.crops_per_image // config.batch_size)
        with progress_bar(progress) as bar:
            ticker = Ticker(bar, "training the protector", config.epochs * steps, start * steps)
            for epoch in range(start, config.epochs):
                tick = functools.partial(_tick, ticker, epoch + 1)
                losses.append(train_epoch(net, optimizer, fitted, pictures, config, epoch, tick))
                write_csv(out / LOSSES, [{"epoch": i + 1, "loss": v} for i, v in enumerate(losses)], ["epoch", "loss"])
                commit_checkpoint(out, net, optimizer, epoch + 1, {"loss": losses[-1]})
            ticker.flush()
    return ProtectorRun(out, losses, start)


def load_protector(path: str | Path, device: str = "cpu") -> LoadedProtector:
    """A protector ``train_protector`` wrote, its weights checked against their SHA-256; one line
    if ``path`` is not one or has no finished epoch."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise VaelensError(f"--protector {path} is not a protector directory; train one with `vaelens protect-train`")
    record = read_json(path / CONFIG)
    if record.get("command") != PROTECTOR_COMMAND:
        raise VaelensError(f"--protector {path} is not a protector directory; train one with `vaelens protect-train`")
    state = read_state(path)
    if state is None:
        raise VaelensError(f"--protector {path} has no finished epoch yet; run `vaelens protect-train` on it")
    try:
        net = ProtectorNet(ProtectorNetConfig(**record["net"]))
        if not isinstance(record["models"], list) or not all(isinstance(s, str) for s in record["models"]):
            raise TypeError("models is not a list of model specs")
        specs = list(record["models"])
    except (TypeError, KeyError, VaelensError) as e:
        raise VaelensError(f"{path / CONFIG} garbles the protector's record ({e}); train the protector again") from None
    weights = path / weight_files(state)[0]
    load_state_dict_checked(net, load_tensors(weights, checksum(state, "model_sha256", path)), weights)
    return LoadedProtector(net.to(device).eval(), specs, float(net.config.eps), int(state.get("epoch", 0)))
