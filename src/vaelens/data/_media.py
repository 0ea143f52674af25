"""Video, audio and volume files as inputs in [0, 1] (docs/method.md section 1, modalities).

``folder:DIR`` data sets read whatever modality the folder holds: video clips through PyAV (the
maintained binding of FFmpeg), audio through soundfile (libsndfile), NIfTI volumes through nibabel.
Each decoder is an optional extra, imported when a file of its kind is first read, with a one-line
error naming the ``pip install`` when it is missing. Every sample comes out as a float32 tensor in
[0, 1], the range of vaelens' protocol; adapters map it to the range their model expects:

- video (C, T, H, W): the first ``frames`` frames, each resized (shorter side) and centre-cropped
  to ``size`` like folder images, 8-bit values / 255;
- audio (C, T): ``seconds`` of signal from the start at ``sample_rate`` (resampled with a
  polyphase filter), zero-padded when shorter; the waveform's [-1, 1] is mapped to [0, 1];
- volume (C, D, H, W): resampled (trilinear) to ``size`` per side, intensities min-max scaled per
  volume, as MONAI's ``ScaleIntensity`` does.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vaelens._errors import VaelensError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
VOLUME_SUFFIXES = (".nii", ".nii.gz")
DECODERS = {"video": ("av", "PyAV", "video"), "audio": ("soundfile", "soundfile", "audio"),
            "volume": ("nibabel", "nibabel", "medical")}  # fmt: skip


@dataclass(frozen=True)
class MediaOptions:
    """How clips of time are cut from files: video ``frames``; audio ``sample_rate`` (Hz) and
    ``seconds``. None: the defaults (8 frames; the first file's rate; 1 second)."""

    frames: int | None = None
    sample_rate: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise VaelensError(f"--frames must be >= 1; got {self.frames}")
        if self.sample_rate is not None and self.sample_rate < 1:
            raise VaelensError(f"--sample-rate must be a positive number of Hz; got {self.sample_rate}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise VaelensError(f"--seconds must be > 0; got {self.seconds}")


def modality(path: Path) -> str | None:
    """ "video", "audio" or "volume" for a media file by its name, else None."""
    name = path.name.lower()
    for kind, suffixes in (("video", VIDEO_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("volume", VOLUME_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def decoder(kind: str) -> ModuleType:
    """The library that reads files of ``kind``, or a one-line error naming its ``pip install``."""
    module, name, extra = DECODERS[kind]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise VaelensError(
            f"reading {kind} files needs {name}; install it with pip install 'vaelens[{extra}]'"
        ) from None


def _unreadable(path: Path, e: Exception) -> VaelensError:
    msg = " ".join(str(e).split())[:160]
    return VaelensError(f"cannot read {path} ({type(e).__name__}: {msg}); remove or replace it")


def _resize_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(T, C, H, W) -> shorter side resized to ``size``, centre-cropped to (T, C, size, size)."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    frames = torch.nn.functional.interpolate(frames, size=shape, mode="bilinear", antialias=True, align_corners=False)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    return frames[..., top : top + size, left : left + size]


def read_video(path: Path, frames: int, size: int, channels: int) -> torch.Tensor:
    """The first ``frames`` frames of a clip as (channels, frames, size, size) in [0, 1]."""
    av = decoder("video")
    kept: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                kept.append(frame.to_ndarray(format="rgb24"))  # (H, W, 3) uint8
                if len(kept) == frames:
                    break
    except (OSError, ValueError, av.FFmpegError) as e:
        raise _unreadable(path, e) from None
    if len(kept) < frames:
        raise VaelensError(f"{path} has {len(kept)} frames but --frames asks for {frames}; pass a smaller --frames")
    clip = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    clip = _resize_crop(clip, size).clamp(0, 1)
    if channels == 1:  # ITU-R 601 luma, as PIL's "L" mode
        clip = (clip * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return clip.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)


def audio_rate(path: Path) -> int:
    """The sample rate of an audio file, in Hz."""
    soundfile = decoder("audio")
    try:
        return int(soundfile.info(str(path)).samplerate)
    except (RuntimeError, OSError, soundfile.LibsndfileError) as e:
        raise _unreadable(path, e) from None


def read_audio(path: Path, sample_rate: int, seconds: float, channels: int) -> torch.Tensor:
    """``seconds`` of a file at ``sample_rate`` as (channels, T) in [0, 1] (waveform [-1, 1] mapped)."""
    soundfile = decoder("audio")
    try:
        wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, C) in [-1, 1]
    except (RuntimeError, OSError, soundfile.LibsndfileError) as e:
        raise _unreadable(path, e) from None
    if rate != sample_rate:
        from scipy.signal import resample_poly

        ratio = Fraction(sample_rate, int(rate)).limit_denominator(1000)
        wave = resample_poly(wave, ratio.numerator, ratio.denominator, axis=0).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(wave.T))  # (C_file, T)
    t = t.mean(0, keepdim=True) if channels == 1 else t[:channels] if len(t) >= channels else t[:1].repeat(channels, 1)
    length = round(sample_rate * seconds)
    t = torch.nn.functional.pad(t[:, :length], (0, max(0, length - t.shape[1])))  # (channels, T)
    return ((t.clamp(-1, 1) + 1) / 2).contiguous()


def read_volume(path: Path, size: int, channels: int) -> torch.Tensor:
    """A NIfTI volume as (channels, size, size, size) in [0, 1]: trilinear resampling, min-max scaling."""
    nibabel = decoder("volume")
    try:
        data = np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float32))
    except (OSError, ValueError, EOFError, nibabel.filebasedimages.ImageFileError) as e:
        raise _unreadable(path, e) from None
    if data.ndim not in (3, 4):
        raise VaelensError(f"{path} holds a {data.ndim}-D array; give 3-D volumes (or 4-D with channels last)")
    v = torch.from_numpy(data if data.ndim == 4 else data[..., None]).permute(3, 0, 1, 2)  # (C_file, D, H, W)
    if len(v) != channels:
        v = v.mean(0, keepdim=True).repeat(channels, 1, 1, 1)
    v = torch.nn.functional.interpolate(v[None], size=(size,) * 3, mode="trilinear", align_corners=False)[0]
    if not torch.isfinite(v).all():
        raise VaelensError(f"{path} holds NaN or Inf voxels; clean the volume first")
    low, high = v.min(), v.max()
    return ((v - low) / (high - low) if high > low else torch.zeros_like(v)).contiguous()


class MediaFileDataset(Dataset):
    """Video, audio or volume files read on access, each a tensor in [0, 1] (module docstring)."""

    def __init__(self, paths: list[Path], labels: list[int], kind: str, **read: Any) -> None:
        self.paths, self.labels, self.kind, self.read = paths, labels, kind, read
        self.layout = kind  # what figures draw the inputs as

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        readers: dict[str, Callable[..., torch.Tensor]] = {"video": read_video, "audio": read_audio,
                                                            "volume": read_volume}  # fmt: skip
        return readers[self.kind](self.paths[i], **self.read), self.labels[i]


def media_dataset(
    kind: str, paths: list[Path], labels: list[int], size: int, channels: int, media: MediaOptions
) -> MediaFileDataset:
    """A data set of media files of one ``kind``, cut as ``media`` says."""
    if kind == "video":
        return MediaFileDataset(paths, labels, kind, frames=media.frames or 8, size=size, channels=channels)
    if kind == "audio":
        rate = media.sample_rate or audio_rate(paths[0])
        return MediaFileDataset(paths, labels, kind, sample_rate=rate, seconds=media.seconds or 1.0, channels=channels)
    return MediaFileDataset(paths, labels, kind, size=size, channels=channels)
