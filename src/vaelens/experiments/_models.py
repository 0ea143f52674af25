"""``--model SPEC``: any VAE from the command line (docs/method.md section 1).

A spec names where a model comes from, through a name-to-factory table:

| spec                       | what it loads                                                       |
| -------------------------- | ------------------------------------------------------------------- |
| ``RUN`` or ``RUN@N``       | a vaelens run directory (the weights after epoch N)                 |
| ``diffusers:DIR``          | a folder written by ``save_pretrained`` (or a pipeline with ``vae/``) |
| ``diffusers:ORG/NAME``     | a hub id, ``[@revision][#subfolder]``; offline, from the HF cache    |
| ``pythae:DIR``             | a folder written by a pythae model's ``save`` (or ``final_model``)   |
| ``pythae:ORG/NAME``        | a hub id, ``[@revision]``; offline, from the HF cache; no pickles   |
| ``python:MODULE:FUNCTION`` | what a factory of the user's returns (runs the user's code)         |
| ``smooth:SIGMA[,k=v]:SPEC`` | the model SPEC names, center-smoothed (``vaelens.smooth``, options: |
|                            | n, n0, alpha, seed, delta, output, chunk_size)                      |

Third-party models come back behind their adapter (``vaelens.adapters``), so every command works
on them as on vaelens' own runs. Only hub ids download (the VAE's files, through huggingface_hub,
with bounded timeouts); nothing is unpickled unless the user passes ``allow_pickle``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import InputSpec, check_runs, model_input_shape, prepare_inputs, resolve_device
from vaelens.adapters import AdaptedVAE, adapt, float32_for_derivatives, load_pythae, load_pythae_hub, require_extra
from vaelens.certification import smooth
from vaelens.data import OFFLINE, MediaOptions, load_dataset, sample_shape, take
from vaelens.evaluation import image_channels
from vaelens.experiments._runs import RunInputs, load, load_run_inputs, parse_run_ref

PREFIXES = ("diffusers", "pythae", "python", "smooth")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?(#[\w./-]+)?")
"""org/name[@revision][#subfolder], as the hub spells repository ids."""

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


def smoothed(model: torch.nn.Module, spec: str) -> torch.nn.Module:
    """The model center-smoothed as the ``smooth:`` spec says; a bad setting is one line naming the
    spec, without the command-line flags (``--sigma``, ``--n``) that a spec's settings are not."""
    smoothing = parse_smooth_spec(spec)
    assert smoothing is not None, spec
    try:
        return smooth(model, **smoothing.options)
    except VaelensError as e:
        message = re.sub(r" \([^()]*--[^()]*\)", "", str(e))
        raise VaelensError(f"{spec!r}: {message}; write {SMOOTH_FORM}") from None


def is_run_spec(spec: str) -> bool:
    """Whether a spec names a vaelens run directory (no ``diffusers:``, ``pythae:`` or ``python:``)."""
    return spec.split(":", 1)[0] not in PREFIXES or Path(spec).is_dir()


def hub_folder(spec: str, allow_pickle: bool) -> Path:
    """The local folder of ``org/name[@revision][#subfolder]`` through huggingface_hub, as diffusers
    resolves it: online it downloads the VAE's config and weights only (bounded timeouts); offline
    (``HF_HUB_OFFLINE=1``) it reads the cache. A pipeline repository's VAE is its vae/ subfolder."""
    hub = require_extra("huggingface_hub")
    rest, _, sub = spec.partition("#")
    repo, _, revision = rest.partition("@")
    offline = bool(hub.constants.HF_HUB_OFFLINE)
    weights = ["*.safetensors", "*.json"] + (["*.bin"] if allow_pickle else [])
    folders = [sub.strip("/")] if sub else ["", "vae"]
    patterns = [f"{f}/{w}" if f else w for f in folders for w in weights]
    try:
        root = hub.snapshot_download(
            repo, revision=revision or None, allow_patterns=patterns, local_files_only=offline, etag_timeout=10
        )
    except Exception as e:  # noqa: BLE001 - the hub raises many kinds (HTTP, offline, not found, timeout)
        msg = " ".join(str(e).split())[:160]
        where = "in the local cache (HF_HUB_OFFLINE is set)" if offline else "on the Hugging Face hub"
        raise VaelensError(
            f"diffusers:{spec}: cannot find {repo}{'@' + revision if revision else ''} {where} "
            f"({type(e).__name__}: {msg}); check the id, or download it once online, or give a local folder"
        ) from None
    return Path(root) / sub.strip("/") if sub else Path(root)


def _diffusers_class(diffusers: Any, config_path: Path, name: str) -> Any:
    """The diffusers class a config names, refused in one line when vaelens cannot take it."""
    from vaelens.adapters._registry import REGISTRY

    entry = REGISTRY.get(("diffusers", name))
    cls = getattr(diffusers, name, None) if name else None
    if entry is not None and entry.refusal is not None:
        raise VaelensError(
            f"{config_path} is a {name} model, which vaelens does not take ({entry.refusal}); "
            "wrap it in a factory of yours (--model python:FILE.py:FUNCTION, with vaelens.adapters.wrap)"
        )
    if cls is None or not callable(getattr(cls, "encode", None)):
        raise VaelensError(
            f"{config_path} is a {name or 'unnamed'} model, which the installed diffusers has no autoencoder "
            "class for; upgrade diffusers, or load it in a factory of yours (--model python:FILE.py:FUNCTION, "
            "with vaelens.adapters.wrap)"
        )
    return cls


def _diffusers(path: str, allow_pickle: bool) -> torch.nn.Module:
    diffusers = require_extra("diffusers")
    local, _, sub = path.partition("#")
    folder = Path(local).expanduser()
    if folder.is_dir():
        folder = folder / sub.strip("/") if sub else folder
    elif HUB_ID.fullmatch(path):
        folder = hub_folder(path, allow_pickle)
    if not (folder / "config.json").is_file() and (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"  # a whole pipeline folder: its VAE
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise VaelensError(
            f"diffusers:{path} holds no config.json (nor vae/config.json); give a folder written by "
            "save_pretrained, a pipeline folder with a vae/ subfolder, or a hub id org/name[@revision][#subfolder]"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as e:
        raise VaelensError(f"{config_path} is not valid JSON ({e}); re-save the model") from None
    name = config.get("_class_name", "") if isinstance(config, dict) else ""
    cls = _diffusers_class(diffusers, config_path, name)
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors and not any(folder.glob("*.bin")):
        raise VaelensError(
            f"{folder} holds no weights (.safetensors or .bin) beside config.json; re-save it with save_pretrained"
        )
    if not has_safetensors and not allow_pickle:
        raise VaelensError(
            f"{folder} has no .safetensors weights, only pickled ones (.bin), and unpickling runs any code "
            "they hold; re-save with save_pretrained(safe_serialization=True), or, only if you trust "
            "the source, pass --allow-pickle"
        )
    try:
        return cls.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=has_safetensors, low_cpu_mem_usage=False
        )
    except Exception as e:  # noqa: BLE001 - a damaged folder can make diffusers raise anything; name it in one line
        msg = " ".join(str(e).split())[:200]
        raise VaelensError(
            f"cannot load the diffusers model in {folder} ({type(e).__name__}: {msg}); re-save it with save_pretrained"
        ) from None


def _pythae(path: str, allow_pickle: bool) -> torch.nn.Module:
    folder = Path(path).expanduser()
    if not folder.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w./-]+)?", path):  # org/name[@revision]
        return load_pythae_hub(path, allow_pickle)
    return load_pythae(folder, allow_pickle)


def _user_error(e: BaseException) -> str:
    """A user's exception in one line: its type, message and the line of the user's file it came from."""
    msg = " ".join(str(e).split())[:200]
    frames = traceback.extract_tb(e.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and "/vaelens/" not in f.filename]
    where = f" at {Path(user[-1].filename).name}:{user[-1].lineno}" if user else ""
    return f"{type(e).__name__}: {msg}{where}" if msg else f"{type(e).__name__}{where}"


def _import_user_module(module_name: str, target: str) -> ModuleType:
    """Import a user's module or file; anything it raises (or a sys.exit in it) is one line."""
    added = None
    try:
        if not module_name.endswith(".py"):
            return importlib.import_module(module_name)
        file = Path(module_name).expanduser()
        if not file.is_file():
            raise VaelensError(f"python:{target}: {file} does not exist")
        spec = importlib.util.spec_from_file_location(file.stem, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        if file.stem not in sys.modules:
            sys.modules[file.stem] = added = module
        spec.loader.exec_module(module)
        return module
    except VaelensError:
        raise
    except (ImportError, SyntaxError) as e:
        raise VaelensError(f"python:{target}: cannot import {module_name} ({e}); check the module path") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code may raise anything; name it in one line
        raise VaelensError(f"python:{target}: importing {module_name} raised {_user_error(e)}") from None
    finally:
        if added is not None and sys.exc_info()[0] is not None:
            sys.modules.pop(added.__name__, None)  # a half-imported module must not be found later


def _python(target: str, allow_pickle: bool) -> torch.nn.Module:
    module_name, _, function = target.rpartition(":")
    if not module_name or not function:
        raise VaelensError(f"python:{target} must be python:MODULE:FUNCTION (or python:path/to/file.py:FUNCTION)")
    module = _import_user_module(module_name, target)
    factory = getattr(module, function, None)
    if not callable(factory):
        raise VaelensError(f"python:{target}: {module_name} has no function {function!r}")
    try:
        return factory()
    except VaelensError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code may raise anything; name it in one line
        raise VaelensError(f"python:{target}: {function}() raised {_user_error(e)}") from None


LOADERS: dict[str, Callable[[str, bool], torch.nn.Module]] = {
    "diffusers": _diffusers,
    "pythae": _pythae,
    "python": _python,
}


def load_model(
    spec: str,
    device: str | torch.device = "cpu",
    allow_pickle: bool = False,
    latent_space: str = "diffusion",
    checkpointing: bool = False,
) -> torch.nn.Module:
    """The VAE a spec names (see the module docstring), on ``device``, in eval mode.

    Arguments:
        spec: ``RUN``, ``RUN@N``, ``diffusers:DIR``, ``diffusers:ORG/NAME[@REV][#SUB]``, ``pythae:DIR``
            or ``python:MODULE:FUNCTION``.
        device: where to put it.
        allow_pickle: allow pickled files (pythae's custom networks, diffusers' .bin weights).
            Unpickling runs whatever code the file holds: only for files from a trusted source.
        latent_space: "diffusion" (the latent the diffusion model sees, where the config has a
            normalisation) or "raw", for diffusers models.
        checkpointing: gradient checkpointing in the model's blocks where its class supports it
            (less memory for derivatives, one more forward pass).

    A half-precision model is worked on as a float32 copy, whichever loader returned it.

    Examples::

        >>> vae = load_model("diffusers:sd-vae-ft-mse")          # a save_pretrained folder
        >>> vae = load_model("diffusers:stabilityai/sd-vae-ft-mse@main")   # a hub id (or its cache)
        >>> vae = load_model("runs/beta1@20")                     # a run, after epoch 20
    """
    spec = str(spec)
    if latent_space not in ("diffusion", "raw"):
        raise VaelensError(f"--latent-space must be diffusion or raw; got {latent_space!r}")
    smoothing = parse_smooth_spec(spec)
    if smoothing is not None:
        return smoothed(load_model(smoothing.inner, device, allow_pickle, latent_space, checkpointing), spec)
    if is_run_spec(spec):
        run_dir, epoch = parse_run_ref(spec)
        return load(run_dir, device, epoch)
    prefix, rest = spec.split(":", 1)
    model = adapt(LOADERS[prefix](rest, allow_pickle), latent_space=latent_space)
    if isinstance(model, AdaptedVAE):
        model.checkpointing = checkpointing
    else:  # a protocol module from a python: factory: upcast like adapted ones
        model = float32_for_derivatives(model)
    return model.to(resolve_device(device)).eval()


def default_dataset(model: torch.nn.Module) -> str:
    """The offline data set whose image shape the model takes, or a one-line error."""
    shape = model_input_shape(model)
    for name in OFFLINE:
        if shape is not None and tuple(sample_shape(load_dataset(name, "test"))) == shape:
            return name
    layout = getattr(model, "input_layout", "image")
    files = {"volume": "NIfTI volumes", "video": "video files", "audio": "audio files"}.get(layout, "images")
    raise VaelensError(
        f"the model takes no offline data set's shape; pass --dataset folder:DIR (a folder of {files}) "
        "with --image-size and --channels"
    )


def check_image_size(image_size: int | None) -> None:
    """``--image-size``: left out (the model's own) or at least 1, never 0 taken as "left out"."""
    if image_size is not None and image_size < 1:
        raise VaelensError(f"--image-size must be >= 1 (or left out for the model's own); got {image_size}")


def folder_image_shape(model: torch.nn.Module, image_size: int | None, channels: int | None) -> tuple[int, int]:
    """(side, channels) of folder: inputs for a model: as given, else the model's own (its declared
    shape's first entry, e.g. an audio model's (C, T); 64, or 32 per side for volumes, and its
    ``image_channels`` when it takes any size)."""
    check_image_size(image_size)
    shape = model_input_shape(model)
    side = 32 if getattr(model, "input_layout", "image") == "volume" else 64  # 64^3 voxels would be slow
    return image_size or (shape[-1] if shape else side), channels or (shape[0] if shape else image_channels(model))


def model_folder(spec: str) -> Path | None:
    """The local folder a ``diffusers:DIR`` or ``pythae:DIR`` spec reads (also inside ``smooth:``), else None."""
    smoothing = parse_smooth_spec(str(spec))
    if smoothing is not None:
        return model_folder(smoothing.inner)
    prefix, _, rest = str(spec).partition(":")
    if prefix not in ("diffusers", "pythae"):
        return None
    folder = Path(rest.partition("#")[0]).expanduser()
    return folder.resolve() if folder.is_dir() else None


def check_not_model(out: str | Path, spec: str) -> None:
    """Refuse, in one line, an ``--out`` that is or lies inside the folder of the model it reads."""
    folder = model_folder(spec)
    where = Path(out).expanduser().resolve()
    if folder is not None and (where == folder or folder in where.parents):
        raise VaelensError(
            f"--out {out} {'is' if where == folder else 'lies inside'} the model's folder {folder}; vaelens "
            "never writes into a model's folder: choose an --out outside it"
        )


def media_for(model: torch.nn.Module, media: MediaOptions | None) -> MediaOptions | None:
    """How clips are cut for this model: a video model's frames follow its declared shape or its
    temporal compression (``InputSpec.default_frames``) unless given; a count it cannot take is
    refused here, in one line naming the counts it can, before any file is read."""
    spec, shape = InputSpec.of(model), model_input_shape(model)
    media = media or MediaOptions()
    if shape is not None and len(shape) == 4 and media.frames is None:  # a declared (C, T, H, W)
        return replace(media, frames=shape[1])
    if spec.layout != "video":
        return media
    if media.frames is None:
        return replace(media, frames=spec.default_frames())
    if not spec.frames_fit(media.frames):
        raise VaelensError(
            f"--frames {media.frames}: the model takes {spec.valid_frames()} frames; "
            f"pass --frames {spec.nearest_frames(media.frames)}"
        )
    return media


def load_model_inputs(
    spec: str,
    dataset: str | None = None,
    split: str = "test",
    n: int = 1000,
    device: str = "cpu",
    image_size: int | None = None,
    channels: int | None = None,
    allow_pickle: bool = False,
    media: MediaOptions | None = None,
    latent_space: str = "diffusion",
    checkpointing: bool = False,
) -> RunInputs:
    """A model by spec and the first n inputs of a split of a data set, checked to fit the model.

    For a run, the data set defaults to the run's own. For other models it is ``dataset``
    (``folder:DIR`` images at ``image_size`` with ``channels``, by default the model's own; video,
    audio or NIfTI files cut as ``media`` says), or the offline set whose shape the model takes.
    ``latent_space`` and ``checkpointing``: see ``load_model``.
    """
    check_image_size(image_size)  # also where the data set has its own size: never ignored
    smoothing = parse_smooth_spec(str(spec))
    if smoothing is not None:
        inner = load_model_inputs(smoothing.inner, dataset, split, n, device, image_size, channels, allow_pickle,
                                  media, latent_space, checkpointing)  # fmt: skip
        return inner._replace(model=smoothed(inner.model, str(spec)))
    if is_run_spec(str(spec)):
        return load_run_inputs(spec, dataset, split, n, device)
    if not isinstance(n, int) or n < 1:
        raise VaelensError(f"n (inputs to evaluate, --n) must be >= 1; got {n}")
    model = load_model(spec, device, allow_pickle, latent_space, checkpointing)
    media = media_for(model, media)
    name = dataset or default_dataset(model)
    x, labels = take(load_dataset(name, split, None, *folder_image_shape(model, image_size, channels), media), n)
    first = prepare_inputs(model, x[:1])  # a data set that does not fit the model fails here, in one line
    check_runs(model, first, f"an input of {name} {tuple(first.shape[1:])}", f"check the model's code ({spec})")
    return RunInputs(model, name, x, labels)
