"""The training loop: beta-VAE with Adam, cosine schedule, KL warm-up, checkpoints and resume.

Checkpoints (weights, optimiser, state) are written atomically at epoch ends, at most every
``checkpoint_every`` seconds and always after the last epoch, so a run started again continues from
its last checkpointed epoch; the epochs of ``save_epochs`` always end with one, which also keeps
their weights. Shuffling, the reparameterisation noise, the mixup draws and the adversarial
attack's starts of epoch e come from generators with distinct seeds derived from (seed, e, stream),
which makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Sized
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import torch
from torch.utils.data import DataLoader, Dataset

from vaelens._errors import Interrupted, VaelensError
from vaelens._io import fault_point, write_csv, write_json
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import encode, eval_mode, prepare_inputs, resolve_device
from vaelens._tensors import load_optimizer, load_state_dict_checked, load_tensors
from vaelens.data import TensorImageDataset, load_dataset
from vaelens.models import build_model
from vaelens.training._config import TrainConfig
from vaelens.training._defence import Defence, DefenceBatch
from vaelens.training._loss import elbo_pass, reconstruct
from vaelens.training._none import NoDefence
from vaelens.training._registry import DEFENCE_TERMS
from vaelens.training._rundir import (
    CONFIG,
    EPOCH_FILES,
    LOCK,
    METRICS,
    checksum,
    commit_checkpoint,
    read_config,
    read_state,
    remove_uncommitted,
    run_lock,
    weight_files,
)

_LOGGED = ("loss", "recon", "kl", *DEFENCE_TERMS)  # the per-batch terms averaged over an epoch, by name
METRIC_FIELDS = ["epoch", *_LOGGED, "beta", "lr", "test_recon", "test_mse", "seconds"]


@dataclass
class TrainResult:
    """What ``train`` returns: the model (eval mode), its run directory and per-epoch metrics."""

    model: torch.nn.Module
    run_dir: Path
    metrics: list[dict[str, float]]


class EpochStreams(NamedTuple):
    """The random streams of one epoch: each its own generator, with its own derived seed."""

    shuffle: torch.Generator  # on the CPU: the order of the training set
    noise: torch.Generator  # on the model's device: the reparameterisation noise
    defence: torch.Generator  # the defence's own (its ``stream``: on the CPU or the model's device)


def stream_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for (run seed, epoch, stream name): distinct streams never share a seed."""
    digest = hashlib.blake2b(f"vaelens/{seed}/{epoch}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def epoch_streams(seed: int, epoch: int, device: torch.device, defence: Defence | None = None) -> EpochStreams:
    # A distinct, reproducible stream per (epoch, use) makes resuming exact without saving RNG state.
    def gen(stream: str, on: torch.device) -> torch.Generator:
        return torch.Generator(device=on).manual_seed(stream_seed(seed, epoch, stream))

    cpu, defence = torch.device("cpu"), defence or NoDefence()
    own = gen(defence.stream, device if defence.stream_on_device else cpu)
    return EpochStreams(gen("shuffle", cpu), gen("noise", device), own)


def _batches(dataset: Dataset, batch_size: int, generator: torch.Generator, shuffle: bool):
    """Yield image batches (B, C, H, W). In-memory sets are sliced directly, skipping collation."""
    if isinstance(dataset, TensorImageDataset):
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            yield dataset.images[order[i : i + batch_size]]
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
        for images, _ in loader:
            yield images


def n_batches(dataset: Dataset, batch_size: int) -> int:
    return math.ceil(len(cast(Sized, dataset)) / batch_size)


@torch.no_grad()
def evaluate_reconstruction(
    model: torch.nn.Module,
    dataset: Dataset,
    likelihood: str,
    batch_size: int = 512,
) -> tuple[float, float]:
    """Mean per-sample reconstruction loss and per-pixel MSE of g(mu(x)) over a data set.

    Batches go to the model's device and dtype.
    """
    total_loss, total_sq, count, pixels = 0.0, 0.0, 0, 0
    with eval_mode(model):
        for x in _batches(dataset, batch_size, torch.Generator(), shuffle=False):
            x = prepare_inputs(model, x, check=False)  # the data set's images were checked when loaded
            mu = encode(model, x).mu  # (B, k)
            mean, nll = reconstruct(model, mu, x, likelihood)
            total_loss += nll.sum().item()
            total_sq += (mean - x).square().sum().item()
            count += len(x)
            pixels += x.numel()
    return total_loss / max(count, 1), total_sq / max(pixels, 1)


def _read_metrics(path: Path, epochs_done: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = [{k: int(float(v)) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:  # a run written before the adversarial terms existed
        for k in DEFENCE_TERMS:
            row.setdefault(k, 0.0)
    return rows[:epochs_done]


def _prepare_run_dir(out: Path, config: TrainConfig) -> dict | None:
    """Create the run directory, or check it holds this very run. Return its state if resuming."""
    if (out / CONFIG).exists():
        existing = read_config(out)
        if existing.identity() != config.identity():
            mine, theirs = config.identity(), existing.identity()
            differs = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise VaelensError(
                f"{out} holds a different run (it differs in {', '.join(differs)}); "
                "choose another --out or delete that directory"
            )
        state = read_state(out)
        remove_uncommitted(out, state)  # what a writer killed mid-checkpoint left behind
        return state
    write_json(out / CONFIG, config.to_dict())
    return None


def train(
    config: TrainConfig,
    out: str | Path,
    progress: bool = True,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    checkpoint_every: float = 10.0,
) -> TrainResult:
    """Train a beta-VAE, writing checkpoints and metrics into ``out``; resume if it holds this run.

    Arguments:
        config: the run's settings.
        out: the run directory.
        progress: show a progress bar with the live loss.
        train_set, test_set: data sets to use instead of loading ``config.dataset`` (each
            ``(image, label)``); the config still names the data set for later loading.
        checkpoint_every: seconds between checkpoints. An epoch ends with a checkpoint when this
            long has passed since the last one, and the last epoch always does. 0 checkpoints
            every epoch. Metrics are written every epoch regardless.

    Returns:
        ``TrainResult`` with the trained model in eval mode.
    """
    out = Path(out)
    device = resolve_device(config.device)
    if (
        out.exists()
        and not (out / CONFIG).exists()
        and (not out.is_dir() or any(p.name != LOCK for p in out.iterdir()))
    ):
        raise VaelensError(f"{out} exists and is not a vaelens run directory; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        return _train(config, out, device, progress, train_set, test_set, checkpoint_every)


def _train(
    config: TrainConfig,
    out: Path,
    device: torch.device,
    progress: bool,
    train_set: Dataset | None,
    test_set: Dataset | None,
    checkpoint_every: float,
) -> TrainResult:
    state = _prepare_run_dir(out, config)
    train_set = _load_split(config, "train") if train_set is None else train_set
    test_set = _load_split(config, "test") if test_set is None else test_set
    model, optimizer, start, kept = _restore(config, out, device, state)
    metrics = _read_metrics(out / METRICS, start)
    last_checkpoint = time.monotonic()
    steps_per_epoch = n_batches(train_set, config.batch_size)
    model.train()
    try:
        with progress_bar(progress) as bar:
            total = config.epochs * steps_per_epoch
            ticker = Ticker(bar, f"training {out.name}", total, completed=start * steps_per_epoch)
            for epoch in range(start, config.epochs):
                tic = time.perf_counter()
                means, beta, lr = _train_epoch(config, model, optimizer, train_set, epoch, epoch == start, ticker)
                test_recon, test_mse = evaluate_reconstruction(model, test_set, config.model.likelihood)
                metrics.append(
                    {"epoch": epoch + 1, **means, "beta": beta, "lr": lr, "test_recon": test_recon,
                     "test_mse": test_mse, "seconds": time.perf_counter() - tic}
                )  # fmt: skip
                write_csv(out / METRICS, metrics, METRIC_FIELDS)
                fault_point("train:epoch-end")
                now, keep = time.monotonic(), epoch + 1 in config.save_epochs
                if epoch + 1 == config.epochs or keep or now - last_checkpoint >= checkpoint_every:
                    kept = commit_checkpoint(out, model, optimizer, epoch + 1, metrics[-1], kept, keep)[EPOCH_FILES]
                    last_checkpoint = now
    except KeyboardInterrupt:
        state = read_state(out)
        saved = f"epoch {state['epoch']} is checkpointed" if state else "no epoch was checkpointed yet"
        raise Interrupted(f"interrupted: {saved} in {out}; run the same command again to resume from there") from None
    model.eval()
    return TrainResult(model, out, metrics)


def _load_split(config: TrainConfig, split: str) -> Dataset:
    return load_dataset(config.dataset, split, config.data_root, config.image_size, config.image_channels)


def _restore(
    config: TrainConfig, out: Path, device: torch.device, state: dict | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer, int, dict[str, dict[str, str]]]:
    """A fresh model and optimiser, or the checkpointed ones; the epochs done and the kept epochs."""
    torch.manual_seed(config.seed)
    model = build_model(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if state is None:
        return model, optimizer, 0, {}
    model_name, optim_name = weight_files(state)
    tensors = load_tensors(out / model_name, checksum(state, "model_sha256", out))
    load_state_dict_checked(model, tensors, out / model_name)
    load_optimizer(out / optim_name, optimizer, state["param_groups"], checksum(state, "optim_sha256", out))
    return model, optimizer, int(state["epoch"]), dict(state.get(EPOCH_FILES, {}))


def _train_epoch(
    config: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: Dataset,
    epoch: int,
    check: bool,
    ticker: Ticker,
) -> tuple[dict[str, float], float, float]:
    """One pass over the training set: the mean of each logged term, the last beta and the lr.

    ``check``: check each batch's values (the first epoch of a process: the data are the same later).
    """
    steps_per_epoch = n_batches(train_set, config.batch_size)
    lr = config.lr * 0.5 * (1 + math.cos(math.pi * epoch / (config.cosine_t_max or config.epochs)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    device = next(model.parameters()).device
    streams = epoch_streams(config.seed, epoch, device, config.defence)
    sums, seen, beta = torch.zeros(len(_LOGGED)), 0, config.beta
    for i, x in enumerate(_batches(train_set, config.batch_size, streams.shuffle, shuffle=True)):
        x = prepare_inputs(model, x, "training images", check=check)
        beta = _beta_at(config, epoch * steps_per_epoch + i, steps_per_epoch)
        loss, logged = _step(
            config, model, x, beta, streams, stream_seed(config.seed, epoch, f"{config.defence.stream}/{i}")
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([logged[name].detach().cpu() for name in _LOGGED]) * len(x)
        seen += len(x)
        ticker.tick(f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.2f}")
    ticker.flush()
    means = dict(zip(_LOGGED, (sums / seen).tolist(), strict=True))
    if not math.isfinite(means["loss"]):
        raise VaelensError(f"training diverged at epoch {epoch + 1} (loss {means['loss']}); lower --lr or --beta")
    return means, beta, lr


def _beta_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """beta at a step: rising linearly over the KL warm-up, then constant."""
    warmup_steps = config.warmup_epochs * steps_per_epoch
    return config.beta * min(1.0, (step + 1) / warmup_steps) if warmup_steps else config.beta


def _step(
    config: TrainConfig,
    model: torch.nn.Module,
    x: torch.Tensor,
    beta: float,
    streams: EpochStreams,
    seed: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one batch x (B, *s) and every logged term by name (zero where unused)."""
    defence, likelihood = config.defence, config.model.likelihood
    noise = torch.randn((len(x), config.model.latent_dim), generator=streams.noise, device=x.device, dtype=x.dtype)
    terms, z = elbo_pass(model, defence.inputs(x, streams.defence), beta, noise, likelihood, target=x)
    loss, logged = terms.loss, {name: torch.zeros(()) for name in DEFENCE_TERMS}
    added = defence.loss(DefenceBatch(model, x, z, noise, beta, likelihood, streams.defence, seed))
    if added is not None:
        for part in added.parts:
            loss = loss + part
        logged.update(added.terms)
    return loss, {"loss": loss, "recon": terms.recon, "kl": terms.kl, **logged}
