"""The user's path is the tested path: each ``--model`` family through the real ``vaelens`` console
script, each command in a fresh process with nothing imported beforehand (docs/method.md s. 1).

Families: diffusers (a ``save_pretrained`` folder), pythae (the ``final_model`` folder of pythae's own
TrainingPipeline, Gaussian and deterministic), MONAI 2-D and 3-D (``python:FILE.py:FUNCTION``
factories, the 3-D one on a folder of NIfTI volumes). Commands: audit, attack, compare, and protect
for the image models. A test process that has already imported a library hides a missing import in
the code under test; a subprocess cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import pythae_pipeline_folder, write_clip, write_volume

pytestmark = pytest.mark.slow  # every test starts the console script (and torch) afresh
pytest.importorskip("diffusers")
pytest.importorskip("pythae.models")
pytest.importorskip("monai")
pytest.importorskip("nibabel")
soundfile = pytest.importorskip("soundfile")
pytest.importorskip("av")

FACTORIES = """
import torch
from monai.networks.nets import AutoencoderKL


def monai_2d():
    torch.manual_seed(0)
    return AutoencoderKL(spatial_dims=2, in_channels=3, out_channels=3, channels=(8, 8), latent_channels=2,
                         num_res_blocks=1, attention_levels=(False, True), norm_num_groups=4)


class Flat(torch.nn.Module):  # a linear Gaussian VAE on inputs of one fixed shape: audio (1, T), video (3, T, H, W)

    def __init__(self, shape, k=3):
        super().__init__()
        torch.manual_seed(0)
        self.input_shape, d = tuple(shape), 1
        for s in shape:
            d *= s
        self.enc, self.dec = torch.nn.Linear(d, 2 * k), torch.nn.Linear(k, d)

    def encode(self, x):
        mu, logvar = self.enc(x.flatten(1)).chunk(2, -1)
        return mu, logvar.clamp(-4, 2)

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(len(z), *self.input_shape)


def audio():
    return Flat((1, 400))


def video():
    return Flat((3, 4, 8, 8))


def monai_3d():
    torch.manual_seed(0)
    return AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 4), latent_channels=2,
                         num_res_blocks=1, attention_levels=(False, False), norm_num_groups=4)
"""


def vaelens(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process (PYTHONPATH kept, so it runs this checkout)."""
    exe = shutil.which("vaelens") or str(Path(sys.executable).parent / "vaelens")
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run([exe, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _pictures(folder: Path, n: int, size: int, mode: str) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """{family: (model spec, extra audit/attack flags, folder of images to protect or None)}."""
    import diffusers
    import torch

    root = tmp_path_factory.mktemp("user-path")
    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=2, norm_num_groups=4,
    ).save_pretrained(root / "sd")  # fmt: skip
    (root / "factories.py").write_text(FACTORIES)
    photos = _pictures(root / "photos", 6, 16, "RGB")
    digits = _pictures(root / "digits", 2, 8, "L")
    (root / "scans").mkdir()
    for i in range(6):
        write_volume(root / "scans" / f"v{i}.nii.gz", np.random.default_rng(i).random((10, 9, 8)))
    image_data = ("--dataset", f"folder:{photos}", "--image-size", "8", "--split", "train")
    return {
        "diffusers": (f"diffusers:{root / 'sd'}", image_data, photos),
        "pythae": (f"pythae:{pythae_pipeline_folder(root, 'VAE')}", (), digits),
        "pythae-deterministic": (f"pythae:{pythae_pipeline_folder(root, 'WAE_MMD')}", (), None),
        "monai-2d": (f"python:{root / 'factories.py'}:monai_2d", image_data, photos),
        "monai-3d": (f"python:{root / 'factories.py'}:monai_3d",
                     ("--dataset", f"folder:{root / 'scans'}", "--image-size", "4", "--split", "train"), None),
    }  # fmt: skip


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


FAMILIES = ("diffusers", "pythae", "pythae-deterministic", "monai-2d", "monai-3d")


@pytest.mark.parametrize("family", FAMILIES)
def test_audit(families, tmp_path, family):
    spec, data, _ = families[family]
    kinds = "mean,output" if family == "pythae-deterministic" else "mean,stochastic,fisher"
    _ok(vaelens("audit", "--model", spec, *data, "--n", "3", "--kind", kinds, "--probe-n", "1", "--out", "a",
                "--quiet", cwd=tmp_path))  # fmt: skip
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert list(summary["summary"]) == kinds.split(",") and summary["model"] == spec
    assert (tmp_path / "a" / "eigen_directions.png").stat().st_size > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_attack(families, tmp_path, family):
    spec, data, _ = families[family]
    objective = ("--objective", "latent") if family == "pythae-deterministic" else ()
    _ok(vaelens("attack", "--model", spec, *data, *objective, "--n", "3", "--steps", "2", "--eps", "0.5,1",
                "--out", "a", "--quiet", cwd=tmp_path))  # fmt: skip
    assert len((tmp_path / "a" / "damage.csv").read_text().splitlines()) > 2  # a header, rows for both budgets
    assert (tmp_path / "a" / "adversarial_grid.png").stat().st_size > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_compare(families, tmp_path, family):
    spec, data, _ = families[family]
    data = tuple(a for a in data if a not in ("--split", "train"))  # compare takes the test split
    proc = vaelens("compare", "--model", spec, *data, "--n", "2", "--steps", "2", "--out", "c", "--quiet", cwd=tmp_path)
    if family == "pythae-deterministic":  # compare scores the stochastic and fisher kinds
        assert proc.returncode == 2 and "deterministic encoder" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        return
    _ok(proc)
    rows = (tmp_path / "c" / "comparison.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith(f"{spec.split(':')[0]}:")


@pytest.mark.parametrize("family", ["diffusers", "pythae", "monai-2d"])
def test_protect(families, tmp_path, family):
    spec, _, pictures = families[family]
    _ok(vaelens("protect", "--model", spec, "--images", pictures, "--out", "p", "--steps", "2", "--no-evaluate",
                "--quiet", cwd=tmp_path))  # fmt: skip
    assert len(list((tmp_path / "p").glob("*.png"))) == len(list(pictures.glob("*.png")))


def test_refusals_are_one_line(families, tmp_path):
    spec, data, _ = families["pythae-deterministic"]
    proc = vaelens("audit", "--model", spec, "--kind", "stochastic", "--n", "2", "--out", "a", cwd=tmp_path)
    assert proc.returncode == 2 and "deterministic encoder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_audio_and_video_folders_with_their_flags(families, tmp_path):
    """--sample-rate/--seconds cut audio (audit, compare), --frames cuts video (attack); figures drawn."""
    factories = families["monai-2d"][0].split(":")[1]  # python:FILE.py:FUNCTION -> FILE.py
    (tmp_path / "sounds").mkdir()
    (tmp_path / "clips").mkdir()
    for i in range(3):
        wave = 0.5 * np.sin(2 * np.pi * (50 + 20 * i) * np.arange(1600) / 1600)
        soundfile.write(tmp_path / "sounds" / f"s{i}.wav", wave.astype(np.float32), 1600)
        write_clip(tmp_path / "clips" / f"c{i}.mp4", [(30 * j, 60, 90) for j in range(6)])
    _ok(vaelens("audit", "--model", f"python:{factories}:audio", "--dataset", f"folder:{tmp_path / 'sounds'}",
                "--sample-rate", "800", "--seconds", "0.5", "--split", "train", "--n", "2", "--probe-n", "0",
                "--out", "a", "--quiet", cwd=tmp_path))  # fmt: skip
    assert (tmp_path / "a" / "eigen_directions.png").stat().st_size > 0
    _ok(vaelens("compare", "--model", f"python:{factories}:audio", "--dataset", f"folder:{tmp_path / 'sounds'}",
                "--sample-rate", "800", "--seconds", "0.5", "--n", "1", "--steps", "2", "--out", "c", "--quiet",
                cwd=tmp_path))  # fmt: skip
    _ok(vaelens("attack", "--model", f"python:{factories}:video", "--dataset", f"folder:{tmp_path / 'clips'}",
                "--frames", "4", "--split", "train", "--n", "2", "--steps", "2", "--out", "v", "--quiet",
                cwd=tmp_path))  # fmt: skip
    assert (tmp_path / "v" / "adversarial_grid.png").stat().st_size > 0
    proc = vaelens("audit", "--model", f"python:{factories}:video", "--dataset", f"folder:{tmp_path / 'clips'}",
                   "--frames", "9", "--out", "w", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "has 6 frames but --frames asks for 9" in proc.stderr
