"""Video, audio and NIfTI folders as data sets, and figures that fit each modality (docs/method.md s. 1).

The files are written here (mp4 through PyAV, wav through soundfile, .nii.gz through nibabel) with
known contents, and read back through ``load_dataset("folder:DIR")``: frame order and colour,
resampled waveforms, intensity scaling, one-line errors for what cannot be read.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from vaelens import VaelensError
from vaelens.data import MediaOptions, load_dataset, take
from vaelens.evaluation._plots import draw_input, eigen_directions, input_layout

from conftest import write_clip, write_volume

av = pytest.importorskip("av")
soundfile = pytest.importorskip("soundfile")
nibabel = pytest.importorskip("nibabel")


def test_video_folder_reads_the_first_frames_in_order(tmp_path):
    colours = [(20 * i, 200 - 20 * i, 128) for i in range(10)]
    for name in ("a", "b"):
        write_clip(tmp_path / f"{name}.mp4", colours)
    x, _ = take(load_dataset(f"folder:{tmp_path}", "train", image_size=8, media=MediaOptions(frames=9)))
    assert x.shape == (1, 3, 9, 8, 8) and x.dtype == torch.float32
    means = x[0].mean((2, 3)).T  # (T, 3): each frame's colour
    torch.testing.assert_close(means, torch.tensor(colours[:9], dtype=torch.float32) / 255, atol=0.03, rtol=0)
    grey, _ = take(load_dataset(f"folder:{tmp_path}", "test", image_size=4, channels=1, media=MediaOptions(frames=2)))
    assert grey.shape == (1, 1, 2, 4, 4)
    with pytest.raises(VaelensError, match="has 10 frames but --frames asks for 12"):
        take(load_dataset(f"folder:{tmp_path}", "test", image_size=8, media=MediaOptions(frames=12)))


def test_animated_gif_is_a_clip_only_when_frames_are_asked_for(tmp_path):
    for i in range(2):
        frames = [Image.new("RGB", (8, 8), (40 * j, 0, 0)) for j in range(5)]
        frames[0].save(tmp_path / f"g{i}.gif", save_all=True, append_images=frames[1:], duration=100)
    clips, _ = take(load_dataset(f"folder:{tmp_path}", "test", image_size=8, media=MediaOptions(frames=5)))
    assert clips.shape == (1, 3, 5, 8, 8)
    assert torch.all(clips[0, 0].mean((1, 2)).diff() > 0.1)  # red rises frame by frame
    images, _ = take(load_dataset(f"folder:{tmp_path}", "test", image_size=8))
    assert images.shape == (1, 3, 8, 8)


def test_audio_folder_resamples_cuts_and_maps_to_unit_range(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 50 * t), 0.3 * np.sin(2 * np.pi * 50 * t)], 1)  # (T, 2)
    for name in ("a", "b"):
        soundfile.write(tmp_path / f"{name}.wav", stereo.astype(np.float32), 8000)
    media = MediaOptions(sample_rate=4000, seconds=0.5)
    x, _ = take(load_dataset(f"folder:{tmp_path}", "test", channels=1, media=media))
    assert x.shape == (1, 1, 2000)
    expected = 0.4 * np.sin(2 * np.pi * 50 * np.arange(2000) / 4000)  # the channels' mean, at 4 kHz
    wave = 2 * x[0, 0].double().numpy() - 1
    np.testing.assert_allclose(wave[100:-100], expected[100:-100], atol=0.01)
    long, _ = take(load_dataset(f"folder:{tmp_path}", "test", channels=2, media=MediaOptions(seconds=1.5)))
    assert long.shape == (1, 2, 12000)  # the file's own rate; zero signal (0.5) after its end
    assert torch.all(long[0, :, 8000:] == 0.5)


def test_nifti_folder_gives_scaled_volumes(tmp_path):
    grid = np.arange(6 * 6 * 6, dtype=np.float32).reshape(6, 6, 6) * 3 - 100
    write_volume(tmp_path / "a.nii.gz", grid)
    write_volume(tmp_path / "b.nii", grid)
    x, _ = take(load_dataset(f"folder:{tmp_path}", "train", image_size=6, channels=1))
    assert x.shape == (1, 1, 6, 6, 6)
    torch.testing.assert_close(x[0, 0], torch.from_numpy((grid - grid.min()) / (grid.max() - grid.min())))
    small, _ = take(load_dataset(f"folder:{tmp_path}", "test", image_size=4, channels=2))
    assert small.shape == (1, 2, 4, 4, 4) and small.min() == 0 and small.max() == 1


def test_folder_errors_are_one_line(tmp_path):
    write_volume(tmp_path / "a.nii.gz", np.zeros((4, 4, 4)))
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(VaelensError, match="mixes 1 image files, 1 volume files"):
        load_dataset(f"folder:{tmp_path}", "test")
    (tmp_path / "b.png").unlink()
    (tmp_path / "c.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(VaelensError, match=r"cannot read .*c\.nii\.gz"):
        for split in ("train", "test"):  # one of them holds the broken file
            take(load_dataset(f"folder:{tmp_path}", split, image_size=4, channels=1))
    for bad in (dict(frames=0), dict(sample_rate=0), dict(seconds=float("nan"))):
        with pytest.raises(VaelensError, match="must be"):
            MediaOptions(**bad)


@pytest.mark.parametrize(("module", "extra", "write"), [
    ("av", "video", lambda p: write_clip(p / "a.mp4", [(0, 0, 0)] * 2)),
    ("soundfile", "audio", lambda p: soundfile.write(p / "a.wav", np.zeros(100, np.float32), 100)),
    ("nibabel", "medical", lambda p: write_volume(p / "a.nii.gz", np.zeros((2, 2, 2)))),
])  # fmt: skip
def test_missing_decoder_names_the_extra(tmp_path, monkeypatch, module, extra, write):
    write(tmp_path)
    (tmp_path / "b").mkdir()
    write(tmp_path / "b")
    monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError, as when not installed
    with pytest.raises(VaelensError, match=rf"pip install 'vaelens\[{extra}\]'"):
        take(load_dataset(f"folder:{tmp_path}", "test", image_size=2, channels=1, media=MediaOptions(frames=2)))


@pytest.mark.parametrize(("layout", "shape"), [
    ("image", (3, 8, 8)), ("video", (3, 6, 8, 8)), ("audio", (2, 400)), ("waveform", (400,)), ("volume", (1, 6, 8, 4)),
])  # fmt: skip
def test_figures_draw_each_modality(tmp_path, layout, shape):
    fig = Figure()
    ax = fig.subplots()
    draw_input(ax, torch.rand(shape), layout)
    drawn = ax.images or [im for inset in ax.child_axes for im in inset.images]
    assert drawn, "nothing was drawn"
    if layout == "video":  # a strip of 4 frames, 1-pixel gaps
        assert drawn[0].get_array().shape[:2] == (8, 4 * 8 + 3)
    if layout == "volume":  # axial (8 x 4), coronal (6 x 4), sagittal (6 x 8) side by side
        assert drawn[0].get_array().shape == (8, 4 + 4 + 8 + 2)
    x = torch.rand(2, *shape)
    eigen_directions(x, torch.ones(2, 2), torch.randn(2, 2, *shape), "mean", tmp_path / "e.png", layout)
    assert (tmp_path / "e.png").stat().st_size > 0


def test_layout_comes_from_the_model_or_the_rank():
    class Volumes(torch.nn.Module):
        input_layout = "volume"

    assert input_layout(Volumes(), 4) == "volume"
    assert [input_layout(torch.nn.Module(), d) for d in (1, 2, 3, 4)] == ["image", "audio", "image", "video"]
