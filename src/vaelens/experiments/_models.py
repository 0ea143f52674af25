"""``--model SPEC``: any VAE from the command line (docs/method.md section 1).

A spec names where a model comes from, through a name-to-factory table:

| spec                       | what it loads                                                       |
| -------------------------- | ------------------------------------------------------------------- |
| ``RUN`` or ``RUN@N``       | a vaelens run directory (the weights after epoch N)                 |
| ``diffusers:DIR``          | a folder written by ``save_pretrained`` (or a pipeline with ``vae/``) |
| ``pythae:DIR``             | a folder written by a pythae model's ``save``                       |
| ``python:MODULE:FUNCTION`` | what a factory of the user's returns (runs the user's code)         |
| ``smooth:SIGMA[,k=v]:SPEC`` | the model SPEC names, center-smoothed (``vaelens.smooth``, options: |
|                            | n, n0, alpha, seed, delta, output, chunk_size)                      |

Third-party models come back behind their adapter (``vaelens.adapters``), so every command works
on them as on vaelens' own runs. Nothing is downloaded; nothing is unpickled unless the user
passes ``allow_pickle``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import model_input_shape, prepare_inputs, resolve_device
from vaelens.adapters import adapt, load_pythae, require_extra
from vaelens.certify import smooth
from vaelens.data import OFFLINE, load_dataset, sample_shape, take
from vaelens.evaluation import image_channels
from vaelens.experiments._runs import RunInputs, load, load_run_inputs, parse_run_ref

PREFIXES = ("diffusers", "pythae", "python", "smooth")
SMOOTH_OPTIONS: dict[str, type] = {
    "n": int, "n0": int, "alpha": float, "seed": int, "delta": float, "output": str, "chunk_size": int
}  # fmt: skip
SMOOTH_FORM = "smooth:SIGMA[,n=N,n0=N0,alpha=A,seed=S,output=latent|recon]:SPEC, e.g. smooth:0.25,n=500:runs/beta1"


class SmoothSpec(NamedTuple):
    """A ``smooth:`` spec read: the inner spec and the keyword arguments of ``vaelens.smooth``."""

    inner: str
    options: dict[str, Any]


def parse_smooth_spec(spec: str) -> SmoothSpec | None:
    """``smooth:SIGMA[,key=value...]:SPEC`` as (SPEC, {sigma, ...}); None for any other spec."""
    if not str(spec).startswith("smooth:"):
        return None
    _, settings, inner = (str(spec).split(":", 2) + [""])[:3]
    fields = settings.split(",")
    try:
        options: dict[str, Any] = {"sigma": float(fields[0])}
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key.strip() not in SMOOTH_OPTIONS:
                raise ValueError(f"unknown option {key.strip()!r}")
            options[key.strip()] = SMOOTH_OPTIONS[key.strip()](value.strip())
    except ValueError as e:
        raise VaelensError(f"{spec!r} is not a smooth spec ({e}); write {SMOOTH_FORM}") from None
    if not inner:
        raise VaelensError(f"{spec!r} names no model to smooth; write {SMOOTH_FORM}")
    return SmoothSpec(inner, options)


DIFFUSERS_CLASSES = ("AutoencoderKL", "AsymmetricAutoencoderKL", "AutoencoderTiny")


def is_run_spec(spec: str) -> bool:
    """Whether a spec names a vaelens run directory (no ``diffusers:``, ``pythae:`` or ``python:``)."""
    return spec.split(":", 1)[0] not in PREFIXES or Path(spec).is_dir()


def _diffusers(path: str, allow_pickle: bool) -> torch.nn.Module:
    diffusers = require_extra("diffusers")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"  # a whole pipeline folder: its VAE
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VaelensError(
            f"diffusers:{path} holds no config.json (nor vae/config.json); give a folder written by "
            "save_pretrained, or a pipeline folder with a vae/ subfolder"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise VaelensError(f"{config_path} is not valid JSON ({e}); re-save the model") from None
    name = config.get("_class_name", "") if isinstance(config, dict) else ""
    if name not in DIFFUSERS_CLASSES:
        raise VaelensError(
            f"{config_path} is a {name or 'unnamed'} model; diffusers: takes {', '.join(DIFFUSERS_CLASSES)}"
        )
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not allow_pickle:
        raise VaelensError(
            f"{folder} has no .safetensors weights, only pickled ones (.bin), and unpickling runs any code "
            "they hold; re-save with save_pretrained(safe_serialization=True), or, only if you trust "
            "the source, pass --allow-pickle"
        )
    try:
        return getattr(diffusers, name).from_pretrained(
            str(folder), local_files_only=True, use_safetensors=has_safetensors, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = " ".join(str(e).split())[:200]
        raise VaelensError(
            f"cannot load the diffusers model in {folder} ({msg}); re-save it with save_pretrained"
        ) from None


def _pythae(path: str, allow_pickle: bool) -> torch.nn.Module:
    return load_pythae(Path(path).expanduser(), allow_pickle)


def _python(target: str, allow_pickle: bool) -> torch.nn.Module:
    module_name, _, function = target.rpartition(":")
    if not module_name or not function:
        raise VaelensError(f"python:{target} must be python:MODULE:FUNCTION (or python:path/to/file.py:FUNCTION)")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name).expanduser()
            if not file.is_file():
                raise VaelensError(f"python:{target}: {file} does not exist")
            spec = importlib.util.spec_from_file_location(file.stem, file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault(file.stem, module)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as e:
        raise VaelensError(f"python:{target}: cannot import {module_name} ({e}); check the module path") from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise VaelensError(f"python:{target}: {module_name} has no function {function!r}")
    try:
        return factory()
    except VaelensError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything; name it in one line
        msg = " ".join(str(e).split())[:200]
        raise VaelensError(f"python:{target}: {function}() raised {type(e).__name__}: {msg}") from None


LOADERS: dict[str, Callable[[str, bool], torch.nn.Module]] = {
    "diffusers": _diffusers,
    "pythae": _pythae,
    "python": _python,
}


def load_model(spec: str, device: str | torch.device = "cpu", allow_pickle: bool = False) -> torch.nn.Module:
    """The VAE a spec names (see the module docstring), on ``device``, in eval mode.

    Arguments:
        spec: ``RUN``, ``RUN@N``, ``diffusers:DIR``, ``pythae:DIR`` or ``python:MODULE:FUNCTION``.
        device: where to put it.
        allow_pickle: allow pickled files (pythae's custom networks, diffusers' .bin weights).
            Unpickling runs whatever code the file holds: only for files from a trusted source.

    Examples::

        >>> vae = load_model("diffusers:sd-vae-ft-mse")          # a save_pretrained folder
        >>> vae = load_model("runs/beta1@20")                     # a run, after epoch 20
    """
    spec = str(spec)
    smoothing = parse_smooth_spec(spec)
    if smoothing is not None:
        return smooth(load_model(smoothing.inner, device, allow_pickle), **smoothing.options)
    if is_run_spec(spec):
        run_dir, epoch = parse_run_ref(spec)
        return load(run_dir, device, epoch)
    prefix, rest = spec.split(":", 1)
    model = adapt(LOADERS[prefix](rest, allow_pickle))
    return model.to(resolve_device(device)).eval()


def default_dataset(model: torch.nn.Module) -> str:
    """The offline data set whose image shape the model takes, or a one-line error."""
    shape = model_input_shape(model)
    for name in OFFLINE:
        if shape is not None and tuple(sample_shape(load_dataset(name, "test"))) == shape:
            return name
    raise VaelensError(
        "the model takes no offline data set's shape; pass --dataset folder:DIR with --image-size and --channels"
    )


def folder_image_shape(model: torch.nn.Module, image_size: int | None, channels: int | None) -> tuple[int, int]:
    """(side, channels) of folder: images for a model: as given, else the model's own (64 and its
    ``image_channels`` when it takes any size)."""
    shape = model_input_shape(model)
    return image_size or (shape[-1] if shape else 64), channels or image_channels(model)


def load_model_inputs(
    spec: str,
    dataset: str | None = None,
    split: str = "test",
    n: int = 1000,
    device: str = "cpu",
    image_size: int | None = None,
    channels: int | None = None,
    allow_pickle: bool = False,
) -> RunInputs:
    """A model by spec and the first n inputs of a split of a data set, checked to fit the model.

    For a run, the data set defaults to the run's own. For other models it is ``dataset``
    (``folder:DIR`` images at ``image_size`` with ``channels``, by default the model's own), or the
    offline set whose shape the model takes.
    """
    smoothing = parse_smooth_spec(str(spec))
    if smoothing is not None:
        inner = load_model_inputs(smoothing.inner, dataset, split, n, device, image_size, channels, allow_pickle)
        return inner._replace(model=smooth(inner.model, **smoothing.options))
    if is_run_spec(str(spec)):
        return load_run_inputs(spec, dataset, split, n, device)
    if not isinstance(n, int) or n < 1:
        raise VaelensError(f"n (inputs to evaluate, --n) must be >= 1; got {n}")
    model = load_model(spec, device, allow_pickle)
    name = dataset or default_dataset(model)
    x, labels = take(load_dataset(name, split, None, *folder_image_shape(model, image_size, channels)), n)
    prepare_inputs(model, x[:1])  # a data set that does not fit the model fails here, in one line
    return RunInputs(model, name, x, labels)
