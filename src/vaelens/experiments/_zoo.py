"""The benchmark's zoo (docs/method.md section 11): every family of a protocol, trained on the same
data for the same epochs, one member (family, seed) per directory.

vaelens' families are beta-VAEs over the protocol's beta grid and its defences at one beta
(mixup with either latent target, adversarial training, noise training, and that noise run
center-smoothed). pythae's Gaussian and deterministic families are trained by pythae's own
``TrainingPipeline`` with its default networks, at the protocol's learning rate and batch size.
A member is finished when its ``member.json`` exists (written last); a rerun skips finished members
and starts the others again (vaelens' runs resume from their checkpoints).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from vaelens._errors import VaelensError
from vaelens._io import read_json, write_json
from vaelens._outputs import check_out_path, released_if_refused
from vaelens._progress import Ticker, progress_bar
from vaelens._version import __version__
from vaelens.experiments._bench_protocol import (
    VAELENS_DEFENCES,
    BenchProtocol,
    get_protocol,
    protocol_from_dict,
)
from vaelens.experiments._ray import RayOptions, check_address, ray_tasks

MEMBER = "member.json"
SMOOTHED = "smoothed-noise"


@dataclass(frozen=True)
class ZooMember:
    """One family at one seed: trained into ``ROOT/FAMILY/seedK``."""

    family: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.family}/seed{self.seed}"


@dataclass
class ZooResult:
    """What ``train_zoo`` returns: the zoo directory, each finished member's record, and which
    members were trained now, found finished, or failed (with the one-line reason)."""

    root: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def check_families(protocol: BenchProtocol, families: list[str] | None) -> tuple[str, ...]:
    """The families asked for (all of the protocol's by default), or a one-line error naming the unknown."""
    known = protocol.families()
    if not families:
        return known
    unknown = [f for f in families if f not in known]
    if unknown:
        raise VaelensError(
            f"unknown zoo family {', '.join(unknown)} under protocol {protocol.version}; choose from {', '.join(known)}"
        )
    return tuple(f for f in known if f in families)  # the protocol's order


def zoo_members(protocol: BenchProtocol, families: list[str] | None = None) -> list[ZooMember]:
    """Every (family, seed) of the zoo, seed-major within each family."""
    return [ZooMember(f, s) for f in check_families(protocol, families) for s in protocol.seeds]


def member_dir(root: Path, member: ZooMember) -> Path:
    return root / member.family / f"seed{member.seed}"


MEMBER_KEYS = ("family", "seed", "protocol", "spec", "source", "beta", "defence", "train_seconds", "parameters")


def read_member(root: Path, member: ZooMember) -> dict[str, Any] | None:
    """A finished member's record, or None: also when its member.json does not read as one (garbled
    or cut by hand), so that the zoo's own file is written again by training the member, not a traceback."""
    path = member_dir(root, member) / MEMBER
    try:
        record = read_json(path) if path.is_file() else None
    except VaelensError:
        return None
    if not isinstance(record, dict) or not set(MEMBER_KEYS) <= set(record):
        return None
    texts, whole = ("family", "protocol", "spec", "source", "defence"), ("seed", "parameters")
    numbers = ("beta", "train_seconds")  # null stands for NaN
    if (
        not all(isinstance(record[k], str) for k in texts)
        or not all(isinstance(record[k], int) and not isinstance(record[k], bool) for k in whole)
        or not all(record[k] is None or isinstance(record[k], int | float) for k in numbers)
    ):
        return None  # values garbled by hand: trained again, as a garbled file is
    return record


def _vaelens_defence(protocol: BenchProtocol, family: str) -> Any:
    from vaelens.training import AdversarialConfig, MixupConfig, NoDefence, NoiseConfig

    factories: dict[str, Any] = {
        "mixup-mean": lambda: MixupConfig(latent_target="mean"),
        "mixup-sample": lambda: MixupConfig(latent_target="sample"),
        "adversarial": lambda: AdversarialConfig(protocol.adv_eps, protocol.adv_steps),
        "noise": lambda: NoiseConfig(protocol.noise_sigma),
    }
    return factories[family]() if family in factories else NoDefence()


def _train_vaelens(protocol: BenchProtocol, member: ZooMember, root: Path, out: Path) -> dict[str, Any]:
    from vaelens.models import ModelConfig
    from vaelens.training import TrainConfig, input_shape_of, train

    defended = member.family in VAELENS_DEFENCES
    beta = protocol.defence_beta if defended else float(member.family.removeprefix("beta-"))
    config = TrainConfig(
        dataset=protocol.dataset, model=ModelConfig("mlp", input_shape_of(protocol.dataset), protocol.latent_dim),
        beta=beta, epochs=protocol.epochs, batch_size=protocol.batch_size, lr=protocol.lr, seed=member.seed,
        defence=_vaelens_defence(protocol, member.family),
    )  # fmt: skip
    start = time.perf_counter()
    result = train(config, out / "run", progress=False, checkpoint_every=0.0)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in result.model.parameters())
    return {"spec": str((out / "run").relative_to(root)), "source": "vaelens", "beta": beta,
            "defence": config.defence.name, "train_seconds": seconds, "parameters": params}  # fmt: skip


def _pythae_trainer_config(name: str, protocol: BenchProtocol, seed: int, output_dir: Path) -> Any:
    trainers = __import__("pythae.trainers", fromlist=["BaseTrainerConfig"])
    cls = {
        "FactorVAE": trainers.AdversarialTrainerConfig,
        "Adversarial_AE": trainers.AdversarialTrainerConfig,
        "VAEGAN": trainers.CoupledOptimizerAdversarialTrainerConfig,
        "RAE_L2": trainers.CoupledOptimizerTrainerConfig,  # pythae's pipeline then adds the decoder's weight decay
        "PIWAE": trainers.CoupledOptimizerTrainerConfig,
    }.get(name, trainers.BaseTrainerConfig)
    return cls(
        output_dir=str(output_dir), num_epochs=protocol.epochs, learning_rate=protocol.lr,
        per_device_train_batch_size=protocol.batch_size, seed=seed, no_cuda=True,
    )  # fmt: skip


def _train_pythae(protocol: BenchProtocol, member: ZooMember, root: Path, out: Path) -> dict[str, Any]:
    from vaelens.adapters import require_extra
    from vaelens.data import load_dataset, take

    require_extra("pythae")
    models = require_extra("pythae.models")
    pipelines = require_extra("pythae.pipelines")
    name = member.family.removeprefix("pythae-")
    data = load_dataset(protocol.dataset, "train")
    x = take(data, len(cast(Any, data)))[0].numpy()  # (N, C, H, W) in [0, 1]
    config_cls = getattr(models, f"{name}Config", None) or getattr(models, f"{name}_Config")
    torch.manual_seed(member.seed)  # pythae's default networks are initialised here
    model = getattr(models, name)(config_cls(input_dim=tuple(x.shape[1:]), latent_dim=protocol.latent_dim))
    scratch = out / f".training-{uuid.uuid4().hex[:8]}"
    for logger in [logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("pythae")]:
        logger.setLevel(logging.WARNING)  # pythae logs every step at INFO
    start = time.perf_counter()
    try:
        pipeline = pipelines.TrainingPipeline(model=model, training_config=_pythae_trainer_config(
            name, protocol, member.seed, scratch))  # fmt: skip
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            pipeline(train_data=x, eval_data=None)
    except Exception as e:  # noqa: BLE001 - pythae raises many types; the zoo reports it and goes on
        shutil.rmtree(scratch, ignore_errors=True)
        msg = " ".join(str(e).split())[:160]
        raise VaelensError(f"pythae {name} failed to train ({type(e).__name__}: {msg})") from None
    seconds = time.perf_counter() - start
    final = next(scratch.glob("*_training_*/final_model"))
    target = out / "model"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(final, target)  # one rename: the model folder appears whole
    shutil.rmtree(scratch, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    return {"spec": f"pythae:{target.relative_to(root)}", "source": "pythae", "beta": float("nan"), "defence": "none",
            "train_seconds": seconds, "parameters": params, "pythae_version": _pythae_version()}  # fmt: skip


def _pythae_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pythae")
    except PackageNotFoundError:
        return "absent"


def train_member(protocol: BenchProtocol | dict, member: ZooMember, root: str | Path) -> dict[str, Any]:
    """Train one member (unless finished) and return its record; ``member.json`` is written last."""
    protocol = protocol if isinstance(protocol, BenchProtocol) else protocol_from_dict(protocol)
    root = Path(root)
    out = member_dir(root, member)
    done = read_member(root, member)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    if member.family == SMOOTHED:
        record = _smoothed_record(protocol, root, member)
    elif member.family.startswith("pythae-"):
        record = _train_pythae(protocol, member, root, out)
    else:
        record = _train_vaelens(protocol, member, root, out)
    # the member's own identity last: smoothed-noise's record starts as a copy of the noise run's
    record = {**record, "family": member.family, "seed": member.seed, "protocol": protocol.version,
              "vaelens_version": __version__}  # fmt: skip
    write_json(out / MEMBER, record)
    return record


def resolve_spec(spec: str, root: Path) -> str:
    """A member's spec (paths relative to the zoo) with its paths under ``root``."""
    if spec.startswith("smooth:"):
        head, _, inner = spec.partition(":")[2].partition(":")
        return f"smooth:{head}:{resolve_spec(inner, root)}"
    if spec.startswith("pythae:"):
        return f"pythae:{root / spec.removeprefix('pythae:')}"
    return str(root / spec)


def _smoothed_record(protocol: BenchProtocol, root: Path, member: ZooMember) -> dict[str, Any]:
    """The noise run of the same seed, center-smoothed at the protocol's sigma: no training of its own."""
    noise = train_member(protocol, ZooMember("noise", member.seed), root)
    p = protocol
    smooth = f"smooth:{p.cert_sigma:g},n={p.smooth_n},n0={p.smooth_n0},alpha={p.smooth_alpha:g},seed={member.seed}"
    smooth += f":{noise['spec']}"
    return {**noise, "spec": smooth, "defence": "noise + smoothing"}


def train_zoo(
    protocol: str | BenchProtocol,
    root: str | Path,
    families: list[str] | None = None,
    executor: str = "local",
    ray: RayOptions | None = None,
    progress: bool = True,
) -> ZooResult:
    """Train (or resume) every member of the protocol's zoo into ``root``; write zoo.json.

    Arguments:
        protocol: a protocol or its name ("v1", "tiny").
        root: the zoo directory; a rerun skips finished members.
        families: restrict to these families (default: all of the protocol's).
        executor: "local" (in turn, in this process) or "ray" (one task per member).
        ray: Ray settings for ``executor="ray"``.
    """
    protocol = get_protocol(protocol)
    if executor not in ("local", "ray"):
        raise VaelensError(f"unknown executor {executor!r}; choose one of local, ray")
    members = zoo_members(protocol, families)
    options = ray or RayOptions()
    ray_module = check_address(options) if executor == "ray" else None  # before the zoo claims anything
    root = check_out_path(root)
    zoo_json = root / "zoo.json"
    if zoo_json.is_file() and read_json(zoo_json).get("protocol", {}).get("version") != protocol.version:
        raise VaelensError(f"{root} holds a zoo of another protocol; choose another --out")
    if root.is_dir() and not zoo_json.is_file() and any(root.iterdir()):
        raise VaelensError(f"{root} is not empty and holds no zoo; choose an empty or new --out")
    with released_if_refused(root, "zoo.json"):  # Ray would not start, or the folder is not shared
        write_json(zoo_json, {"protocol": protocol.to_dict(), "vaelens_version": __version__})
        result = ZooResult(root)
        result.skipped = [m.name for m in members if read_member(root, m) is not None]
        later = [m for m in members if m.family == SMOOTHED]  # built on the noise runs, after them
        first = [m for m in members if m.family != SMOOTHED]
        with progress_bar(progress) as bar:
            ticker = Ticker(bar, f"zoo ({executor})", len(members), interval=0.0)
            if executor == "ray":
                _run_ray(ray_module, protocol, first, root, options, result, ticker)
            else:
                _run_local(protocol, first, root, result, ticker)
            _run_local(protocol, later, root, result, ticker)
    result.records = [r for m in members if (r := read_member(root, m)) is not None]
    return result


def _run_local(
    protocol: BenchProtocol, members: list[ZooMember], root: Path, result: ZooResult, ticker: Ticker
) -> None:
    for m in members:
        fresh = read_member(root, m) is None
        try:
            train_member(protocol, m, root)
        except VaelensError as e:
            result.failed[m.name] = str(e)
        else:
            if fresh:
                result.done.append(m.name)
        ticker.tick(m.name)
        ticker.flush()


def _member_task(protocol: dict, member: ZooMember, root: str, cpus: float) -> dict[str, Any]:
    """One member on a Ray worker: its record, or the user error's message (never retried)."""
    torch.set_num_threads(max(1, int(cpus)))  # a reused worker keeps torch's earlier thread count
    try:
        return {"record": train_member(protocol, member, root)}
    except VaelensError as e:
        return {"error": str(e)}


def _run_ray(
    ray: Any, protocol: BenchProtocol, members: list[ZooMember], root: Path, options: RayOptions,
    result: ZooResult, ticker: Ticker,
) -> None:  # fmt: skip
    """Every unfinished member as a Ray task (the zoo directory must be shared with the workers)."""
    todo = [m for m in members if read_member(root, m) is None]
    if not todo:
        return
    jobs = [(m.name, (protocol.to_dict(), m, str(root), options.unit_cpus)) for m in todo]

    def ended(name: str, out: dict[str, Any]) -> None:
        if "error" in out:
            result.failed[name] = out["error"]
        else:
            result.done.append(name)
        ticker.tick(name)
        ticker.flush()

    ray_tasks(ray, options, root, _member_task, jobs, ended)
