"""Protecting videos against editing through a video VAE: the encoder attack of ``_protect.py`` on
whole clips (docs/method.md section 9, videos; section 1 for the frame counts video VAEs take).

Each clip in a folder is decoded at its own size (PyAV); its first frames, as many as the model
takes (1 + 4k for a causal video VAE, up to the whole clip), get an 8-bit perturbation within eps
(L-inf) pulling the encoder mean towards a flat gray clip's, by ``TargetedAttack`` on the "latent"
objective. The protected clip is written losslessly (FFV1 in Matroska, NAME.mkv) beside protect.csv
and summary.json; frames past the protected ones are copied as they are. The one check that matters
for a video is its upload: the protection is re-measured after a lossy H.264 (or MPEG-4) round trip
and reported as holding or failed, by the rule images use (``holds``). The originals are never
written, as for images. ``protect_video_files`` (the CLI's path) works clip by clip: decode,
protect, write, free, so that memory follows one clip, not the folder.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from vaelens._errors import VaelensError
from vaelens._io import atomic_write, write_csv, write_json
from vaelens._outputs import check_out_path, claim_output, finish_output, read_marker
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import InputSpec, frozen, model_input_shape, prepare_inputs
from vaelens.attacks import Reference, TargetedAttack, divergence
from vaelens.data import media_decoder as decoder
from vaelens.data import media_kind as modality
from vaelens.evaluation._protect import GRAY, ProtectConfig, holds
from vaelens.evaluation._protect_writer import check_not_images

LOSSY = ("libx264", "mpeg4")  # the upload check's codec: the first the installed FFmpeg has
COLUMNS = ("video", "frames", "frames_protected", "height", "width", "distance_before", "distance_after", "linf",
           "perturbation_psnr", "codec_distance_clean", "codec_distance", "codec_held")  # fmt: skip


@dataclass(frozen=True)
class Clip:
    """A decoded clip: ``frames`` (T, H, W, 3) uint8 RGB and its frame ``rate``."""

    frames: np.ndarray
    rate: Fraction


@dataclass(frozen=True)
class VideoProtection:
    """One protected clip.

    Arguments:
        frames: (T, H, W, 3) uint8, the protected clip (the first ``frames_protected`` changed).
        distance_before, distance_after: ||mu(x) - mu_target||_2 for the original and protected frames.
        linf: the largest pixel change, in 8-bit units.
        perturbation_psnr: PSNR (dB) of the protected frames against the originals.
        codec_distance_clean, codec_distance: the same distances after a lossy re-encode of each
            (NaN when not evaluated); ``codec_held``: whether the protection survived it (``holds``).
    """

    frames: np.ndarray
    frames_protected: int
    distance_before: float
    distance_after: float
    linf: int
    perturbation_psnr: float
    codec_distance_clean: float = math.nan
    codec_distance: float = math.nan
    codec_held: bool = False


def video_files(folder: str | Path) -> list[Path]:
    """The video files directly in ``folder``, sorted by name (empty if it holds none)."""
    folder = Path(folder)
    found = sorted(p for p in folder.iterdir() if p.is_file() and modality(p) == "video") if folder.is_dir() else []
    seen: dict[str, Path] = {}
    for p in found:  # each copy is written as NAME.mkv: two clips of one stem would share it
        if output_name(p.name) in seen:
            raise VaelensError(
                f"{seen[output_name(p.name)].name} and {p.name} would both be protected as {output_name(p.name)}; "
                "rename one of them"
            )
        seen[output_name(p.name)] = p
    return found


def read_clip(path: Path) -> Clip:
    """Every frame of a video file at its own size, as (T, H, W, 3) uint8 RGB."""
    av = decoder("video")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = Fraction(stream.average_rate or 8)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]  # (H, W, 3) each
    except (OSError, ValueError, IndexError, av.FFmpegError) as e:
        raise VaelensError(f"cannot read {path} ({type(e).__name__}); remove or replace it") from None
    if not frames:
        raise VaelensError(f"{path} holds no frames; remove or replace it")
    return Clip(np.stack(frames), rate)


def _encode(target: Any, frames: np.ndarray, rate: Fraction, codec: str, fmt: str, pix_fmt: str) -> None:
    av = decoder("video")
    with av.open(target, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def write_clip(path: Path, clip: Clip) -> None:
    """A clip written losslessly (FFV1 in Matroska), atomically."""
    atomic_write(path, lambda tmp: _encode(tmp, clip.frames, clip.rate, "ffv1", "matroska", "bgr0"))


def reencoded(clip: Clip) -> np.ndarray | None:
    """The clip after a lossy round trip through the first codec of ``LOSSY`` (what an upload does),
    (T, H, W, 3) uint8; None for odd sizes, which 4:2:0 chroma cannot hold."""
    av = decoder("video")
    if clip.frames.shape[1] % 2 or clip.frames.shape[2] % 2:
        return None
    codec = next(c for c in LOSSY if c in av.codecs_available)
    buffer = io.BytesIO()
    _encode(buffer, clip.frames, clip.rate, codec, "mp4", "yuv420p")
    buffer.seek(0)
    with av.open(buffer) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def protected_frames(model: torch.nn.Module, n: int, name: str) -> int:
    """How many of a clip's ``n`` frames the model is given: its declared count, else the largest
    count it takes up to the whole clip; a model of another modality is refused in one line."""
    spec, shape = InputSpec.of(model), model_input_shape(model)
    if shape is not None and len(shape) == 4:  # a declared (C, T, H, W)
        frames = shape[1]
    elif spec.layout == "video":
        frames = spec.nearest_frames(n) if spec.frame_multiple > 1 else n
    else:
        layout = spec.layout if shape is None else f"{len(shape)}-D"
        raise VaelensError(f"the model takes {layout} inputs, not videos; protect videos with a video VAE")
    if frames > n:
        raise VaelensError(f"{name} has {n} frames but the model takes {frames}; give longer clips")
    return frames


def _as_input(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255  # (1, 3, T, H, W)


def protect_clip(model: torch.nn.Module, clip: Clip, config: ProtectConfig, name: str = "the clip") -> VideoProtection:
    """Protect one clip (see the module docstring); ``config.robust`` must be empty (image transforms)."""
    k = protected_frames(model, len(clip.frames), name)
    x = _as_input(clip.frames[:k])  # (1, 3, k, H, W)
    prepare_inputs(model, x, name)  # a clip the model cannot take is refused here, before the attack
    attack = TargetedAttack(model, config.eps / 255, "linf", "latent", config.steps, random_start=True,
                            seed=config.seed)  # fmt: skip
    x_adv = attack(x, torch.full_like(x, GRAY)).cpu()  # (1, 3, k, H, W)
    step = math.floor(config.eps)
    original = torch.from_numpy(clip.frames[:k]).int()  # (k, H, W, 3)
    q = (x_adv[0].permute(1, 2, 3, 0).double() * 255).round().int()  # (k, H, W, 3)
    q = torch.minimum(torch.maximum(q, (original - step).clamp(min=0)), (original + step).clamp(max=255))
    frames = clip.frames.copy()
    frames[:k] = q.to(torch.uint8).numpy()
    return _measure(model, clip, Clip(frames, clip.rate), k, config)


@torch.no_grad()
def _measure(model: torch.nn.Module, clip: Clip, protected: Clip, k: int, config: ProtectConfig) -> VideoProtection:
    with frozen(model):
        ref = Reference.of(model, prepare_inputs(model, torch.full_like(_as_input(clip.frames[:k]), GRAY)))

        def distance(frames: np.ndarray) -> float:
            return float(divergence(model, prepare_inputs(model, _as_input(frames[:k])), ref, "latent").sqrt())

        before, after = distance(clip.frames), distance(protected.frames)
        change = protected.frames[:k].astype(np.int64) - clip.frames[:k]
        mse = float(np.mean((change / 255.0) ** 2))
        result = VideoProtection(protected.frames, k, before, after, int(np.abs(change).max()),
                                 10 * math.log10(1 / mse) if mse > 0 else math.inf)  # fmt: skip
        clean, lossy = (reencoded(clip), reencoded(protected)) if config.evaluate else (None, None)
        if clean is None or lossy is None:
            return result
        d_clean, d = distance(clean), distance(lossy)
    held = holds(before - after, d_clean, d)  # replace(), not asdict(): that would deep-copy the frames
    return replace(result, codec_distance_clean=d_clean, codec_distance=d, codec_held=held)


def _check_clips(model: torch.nn.Module, config: ProtectConfig, clips: Iterable[tuple[str, Clip]]) -> None:
    """Fail before the first long attack, not after it: --robust, no clips, a clip the model cannot take."""
    if config.robust:
        raise VaelensError("--robust draws image transforms; videos are protected without it (drop --robust)")
    empty = True
    for name, clip in clips:
        empty = False
        k = protected_frames(model, len(clip.frames), name)
        prepare_inputs(model, _as_input(clip.frames[:k]), name)
    if empty:
        raise VaelensError("no video files to protect; pass a folder of them")


def protect_videos(
    model: torch.nn.Module, clips: dict[str, Clip], config: ProtectConfig | None = None, progress: bool = True
) -> dict[str, VideoProtection]:
    """Protect each clip of ``clips`` ({file name: ``Clip``}) with ``protect_clip``, after checking
    that the model takes every one of them.

    Examples::

        >>> clips = {p.name: read_clip(p) for p in video_files("clips/")}   # (T, H, W, 3) uint8 each
        >>> result = protect_videos(wan_vae, clips, ProtectConfig(eps=8, steps=100))
        >>> write_video_protection(result, clips, "protected/", ProtectConfig(eps=8, steps=100))
    """
    config = config or ProtectConfig()
    _check_clips(model, config, clips.items())
    results = {}
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "protecting", len(clips), interval=0.0)
        for name, clip in clips.items():
            results[name] = protect_clip(model, clip, config, name)
            ticker.tick(name)
        ticker.flush()
    return results


def output_name(name: str) -> str:
    """The protected copy of video file ``name``: NAME.mkv (lossless)."""
    return f"{Path(name).stem}.mkv"


def claim_videos(out: str | Path, names: list[str], config: ProtectConfig, meta: dict, overwrite: bool) -> Path:
    """Claim ``out`` for the protected copies of ``names``; a file vaelens did not write there is
    never written over, with or without ``overwrite``, and the originals (``meta["images"]``) never."""
    if meta.get("images"):
        check_not_images(out, meta["images"])
    out = check_out_path(out)
    files = [*(output_name(n) for n in names), "protect.csv", "summary.json"]
    marker = read_marker(out) if out.is_dir() else None
    foreign = [f for f in files if (out / f).exists() and f not in set((marker or {}).get("files", []))]
    if foreign:
        raise VaelensError(f"{out / foreign[0]} exists and was not written by vaelens; choose another --out")
    return claim_output(out, "protect", {"protect": asdict(config), "videos": True, **meta}, overwrite, files)


def write_video_protection(
    results: dict[str, VideoProtection], clips: dict[str, Clip], out: str | Path, config: ProtectConfig,
    meta: dict | None = None, overwrite: bool = False,
) -> dict[str, Path]:  # fmt: skip
    """Write NAME.mkv for each clip, protect.csv (``COLUMNS``) and summary.json; return {name: path}."""
    out = claim_videos(out, list(results), config, meta or {}, overwrite)
    paths: dict[str, Path] = {}
    for name, p in results.items():
        paths[name] = out / output_name(name)
        write_clip(paths[name], Clip(p.frames, clips[name].rate))
    return _write_tables(out, results, config, meta, paths)


def _write_tables(
    out: Path, results: dict[str, VideoProtection], config: ProtectConfig, meta: dict | None, paths: dict[str, Path]
) -> dict[str, Path]:
    """protect.csv and summary.json beside the clips already written (``paths``), the marker last."""
    rows = []
    for name, p in results.items():
        values = {**{f.name: getattr(p, f.name) for f in fields(p) if f.name != "frames"}, "video": name,
                  "frames": len(p.frames), "height": p.frames.shape[1], "width": p.frames.shape[2],
                  "codec_held": int(p.codec_held)}  # fmt: skip
        rows.append({c: values[c] for c in COLUMNS})
    paths["protect.csv"] = out / "protect.csv"
    write_csv(paths["protect.csv"], rows, list(COLUMNS))
    paths["summary.json"] = out / "summary.json"
    measured = [p for p in results.values() if not math.isnan(p.codec_distance)]
    write_json(paths["summary.json"], {
        "protect": asdict(config), "videos": True, **(meta or {}), "n": len(results),
        "mean": {m: float(np.mean([getattr(p, m) for p in results.values()]))
                 for m in ("distance_before", "distance_after", "perturbation_psnr")},
        "held": {"codec": sum(p.codec_held for p in measured)} if config.evaluate else None,
    })  # fmt: skip
    finish_output(out, [p.name for p in paths.values()])
    return paths


class VideoRun(NamedTuple):
    """What ``protect_video_files`` returns: each clip's protection (``frames`` a zero-memory
    placeholder of the clip's shape: the protected clip itself is on disk) and {name: path written}."""

    results: dict[str, VideoProtection]
    paths: dict[str, Path]


def _decoded(paths: Sequence[Path]) -> Iterator[tuple[str, Clip]]:
    for path in paths:
        yield path.name, read_clip(path)


def protect_video_files(
    model: torch.nn.Module, paths: Sequence[Path], out: str | Path, config: ProtectConfig | None = None,
    meta: dict | None = None, overwrite: bool = False, progress: bool = True,
) -> VideoRun:  # fmt: skip
    """``protect_videos`` then ``write_video_protection`` on video files, clip by clip: each is decoded,
    protected, written and freed before the next, so memory follows one clip, not the folder. Every
    clip is first decoded once and checked (readable, of a shape the model takes) before ``out`` is claimed.
    """
    config = config or ProtectConfig()
    _check_clips(model, config, _decoded(paths))
    out = claim_videos(out, [p.name for p in paths], config, meta or {}, overwrite)
    results: dict[str, VideoProtection] = {}
    written: dict[str, Path] = {}
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "protecting", len(paths), interval=0.0)
        for name, clip in _decoded(paths):
            p = protect_clip(model, clip, config, name)
            written[name] = out / output_name(name)
            write_clip(written[name], Clip(p.frames, clip.rate))
            placeholder = np.broadcast_to(np.zeros((), np.uint8), p.frames.shape)  # (T, H, W, 3), no memory
            results[name] = replace(p, frames=placeholder)
            del clip, p
            ticker.tick(name)
        ticker.flush()
    return VideoRun(results, _write_tables(out, results, config, meta, written))
