"""Video inputs end to end (docs/method.md section 1, modalities): the frames a clip is cut to follow
the model's temporal compression; ``compare`` and ``certify`` load models in the latent space and with
the checkpointing asked for; and, slow, a real diffusers video VAE class through the console script
(audit, attack, compare, protect) on a folder of tiny clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaelens import VaelensError
from vaelens._protocol import InputSpec
from vaelens.data import MediaOptions

diffusers = pytest.importorskip("diffusers")
from diffusers_zoo import TINY  # noqa: E402 - after the importorskip that needs diffusers


class FlatVideo(torch.nn.Module):
    """A linear Gaussian VAE on clips of one declared shape (C, T, H, W)."""

    def __init__(self, shape: tuple[int, ...], k: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.input_shape, d = shape, int(torch.tensor(shape).prod())
        self.enc, self.dec = torch.nn.Linear(d, 2 * k).double(), torch.nn.Linear(k, d).double()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x.flatten(1)).chunk(2, -1)  # (B, k) each
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z)).view(len(z), *self.input_shape)


def tiny(name: str, folder=None):
    torch.manual_seed(0)
    model = getattr(diffusers, name)(**TINY[name][0]).eval()
    if folder is not None:
        model.save_pretrained(folder)
    return model


@pytest.mark.parametrize(
    ("multiple", "causal", "default", "nearest_to_8"),
    [(1, False, 8, 8), (4, False, 8, 8), (3, False, 6, 6), (4, True, 9, 5), (2, True, 9, 7), (8, True, 9, 1 + 8),
     (16, False, 16, 16)],
)  # fmt: skip
def test_default_frames_are_the_largest_count_the_model_takes(multiple, causal, default, nearest_to_8):
    spec = InputSpec("video", 3, 1, multiple, causal)
    assert spec.default_frames() == default and spec.frames_fit(default)
    assert spec.nearest_frames(8) == nearest_to_8 and spec.frames_fit(nearest_to_8)
    assert spec.frames_fit(8) == ((8 - causal) % multiple == 0)


def test_a_causal_video_vae_gets_9_frames_and_a_wrong_count_is_refused_naming_the_valid_ones():
    from vaelens.adapters import from_diffusers
    from vaelens.experiments._models import media_for

    wan = from_diffusers(tiny("AutoencoderKLWan"))  # 1 + 4k frames
    assert media_for(wan, None).frames == 9
    assert media_for(wan, MediaOptions(frames=13, seconds=2.0)) == MediaOptions(frames=13, seconds=2.0)
    with pytest.raises(VaelensError, match=r"--frames 8: .*1 \+ a multiple of 4 \(5, 9, 13, \.\.\.\).*--frames 5$"):
        media_for(wan, MediaOptions(frames=8))
    image = from_diffusers(tiny("AutoencoderKL"))
    assert media_for(image, None) == MediaOptions()  # images: nothing to cut (and a GIF stays an image)
    with pytest.raises(VaelensError, match="1 \\+ a multiple of 4 .*; pass --frames 5"):
        InputSpec.of(wan).check(torch.rand(1, 3, 6, 4, 4), "x")


def test_compare_loads_third_party_models_in_the_latent_space_and_with_checkpointing(tmp_path):
    from vaelens.experiments import compare_output
    from vaelens.experiments._compare import _entry

    tiny("AutoencoderKLQwenImage", tmp_path / "qwen")  # latents_mean/std: a diffusion latent space
    spec = f"diffusers:{tmp_path / 'qwen'}"
    _, model = _entry(spec, "folder:x", False, "raw", True)
    assert model is not None and (model.latent_space, model.checkpointing) == ("raw", True)
    _, model = _entry(spec, "folder:x", False)
    assert model is not None and (model.latent_space, model.checkpointing) == ("diffusion", False)
    assert compare_output([spec], 2, 1.0, 2, 0, "raw")["latent_space"] == "raw"
    assert "latent_space" not in compare_output([str(tmp_path / "a-run")], 2, 1.0, 2, 0)  # runs: one latent only


def test_protect_videos_pulls_each_clip_within_eps_writes_lossless_copies_and_never_the_originals(tmp_path):
    from vaelens.adapters import from_diffusers
    from vaelens.evaluation import ProtectConfig, protect_videos, read_clip, video_files, write_video_protection
    from vaelens.evaluation._protect_video import protected_frames

    from conftest import write_clip

    (tmp_path / "clips").mkdir()
    for i in range(2):
        write_clip(tmp_path / "clips" / f"c{i}.mp4", [(40 * j, 200 - 30 * j, 90 + i * 50) for j in range(6)], (8, 8))
    clips = {p.name: read_clip(p) for p in video_files(tmp_path / "clips")}
    assert protected_frames(from_diffusers(tiny("AutoencoderKLWan")), 6, "c0") == 5  # 1 + 4k of the clip's 6
    config = ProtectConfig(eps=8, steps=3)
    result = protect_videos(FlatVideo((3, 5, 8, 8)), clips, config, progress=False)  # declares 5 frames
    for name, p in result.items():
        assert p.frames_protected == 5
        assert p.distance_after < p.distance_before and p.linf <= 8
        assert (p.frames[5:] == clips[name].frames[5:]).all()  # frames past the protected ones are copied
        assert p.codec_distance == p.codec_distance  # the H.264 round trip was measured (even sizes)
    paths = write_video_protection(result, clips, tmp_path / "out", config, {"images": str(tmp_path / "clips")})
    back = read_clip(paths["c0.mp4"])
    assert (back.frames == result["c0.mp4"].frames).all()  # lossless: the written file is the protection
    assert "codec_held" in (tmp_path / "out" / "protect.csv").read_text().splitlines()[0]
    with pytest.raises(VaelensError, match="never writes where the originals are"):
        write_video_protection(result, clips, tmp_path / "clips" / "x", config, {"images": str(tmp_path / "clips")})
    with pytest.raises(VaelensError, match="takes image inputs, not videos"):
        protect_videos(from_diffusers(tiny("AutoencoderKL")), clips, config, progress=False)
    with pytest.raises(VaelensError, match="--robust"):
        protect_videos(FlatVideo((3, 5, 8, 8)), clips, ProtectConfig(robust=("jpeg",)), progress=False)


def test_an_out_in_the_models_own_folder_is_refused_in_one_line(tmp_path):
    from vaelens.experiments import check_not_model

    (tmp_path / "sd").mkdir()
    for out, where in ((tmp_path / "sd", "is"), (tmp_path / "sd" / "audit", "lies inside")):
        with pytest.raises(VaelensError, match=f"--out .* {where} the model's folder .*choose an --out outside it"):
            check_not_model(out, f"diffusers:{tmp_path / 'sd'}#vae")
        with pytest.raises(VaelensError, match="the model's folder"):
            check_not_model(out, f"pythae:{tmp_path / 'sd'}")
    check_not_model(tmp_path / "audit", f"diffusers:{tmp_path / 'sd'}")  # beside it: fine
    check_not_model(tmp_path / "sd", "python:factory.py:make")  # a factory's folder is the user's working folder


def test_protect_refuses_images_for_a_volume_model_without_pointing_to_channels():
    monai = pytest.importorskip("monai.networks.nets")
    from vaelens.adapters import from_monai
    from vaelens.evaluation import check_inputs

    net = monai.AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 4), latent_channels=2,
                              num_res_blocks=1, attention_levels=(False, False), norm_num_groups=4)  # fmt: skip
    with pytest.raises(VaelensError, match="a.png is an image but the model takes volume inputs") as e:
        check_inputs(from_monai(net), {"a.png": torch.zeros(3, 8, 8, dtype=torch.uint8)})
    assert "--channels" not in str(e.value)


@pytest.mark.slow
def test_a_diffusers_video_vae_through_the_console_script(tmp_path):
    """AutoencoderKLWan (random weights, saved with save_pretrained) on a folder of mp4 clips: audit
    with the default frames (9 = 1 + 4k), attack with --frames 5, a wrong --frames refused, compare in
    the raw latent space with checkpointing, protect writing lossless copies, --out in the model refused."""
    import json
    import shutil
    import subprocess
    import sys

    from conftest import write_clip

    tiny("AutoencoderKLWan", tmp_path / "wan")
    for folder, n in (("clips", 4), ("protect", 2)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            colours = [(20 * j, 120 + 10 * i, 200 - 15 * j) for j in range(10)]
            write_clip(tmp_path / folder / f"c{i}.mp4", colours, (8, 8))
    exe = shutil.which("vaelens") or str(Path(sys.executable).parent / "vaelens")

    def vaelens(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=600)

    model, data = f"diffusers:{tmp_path / 'wan'}", ("--dataset", f"folder:{tmp_path / 'clips'}", "--image-size", "4")
    proc = vaelens("audit", "--model", model, *data, "--split", "train", "--n", "1", "--kind", "stochastic",
                   "--probe-n", "0", "--out", "a", "--quiet")  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["latent_space"] == "diffusion" and summary["latent_normalisation"].startswith("latents_mean")
    proc = vaelens("attack", "--model", model, *data, "--split", "train", "--frames", "5", "--n", "1", "--steps", "2",
                   "--eps-rms", "0.05", "--out", "b", "--quiet")  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len((tmp_path / "b" / "damage.csv").read_text().splitlines()) > 1
    proc = vaelens("audit", "--model", model, *data, "--frames", "8", "--out", "x")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "1 + a multiple of 4 (5, 9, 13, ...)" in proc.stderr and "--frames 5" in proc.stderr
    proc = vaelens("compare", "--model", model, *data, "--frames", "5", "--n", "1", "--steps", "1",
                   "--latent-space", "raw", "--checkpointing", "--out", "c", "--quiet")  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "c" / "comparison.csv").read_text().count("\n") == 2
    proc = vaelens("protect", "--model", model, "--images", tmp_path / "protect", "--out", "p", "--steps", "2")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "p").glob("*.mkv")) == ["c0.mkv", "c1.mkv"]
    assert "9/10" in proc.stdout  # 1 + 4k of each clip's 10 frames protected
    proc = vaelens("audit", "--model", model, *data, "--out", tmp_path / "wan" / "audit")
    assert proc.returncode == 2 and "the model's folder" in proc.stderr and "Traceback" not in proc.stderr


FLAT_VIDEO_FACTORY = """
import torch


class Flat(torch.nn.Module):
    input_shape = (3, 5, 8, 8)

    def __init__(self):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(960, 6), torch.nn.Linear(3, 960)

    def encode(self, x):
        return self.enc(x.flatten(1)).chunk(2, -1)

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(len(z), 3, 5, 8, 8)


def make():
    torch.manual_seed(0)
    return Flat()
"""


def test_protect_on_clips_claims_out_before_attacking_and_refuses_image_options(run_cli, tmp_path, monkeypatch):
    import vaelens.evaluation

    from conftest import write_clip

    monkeypatch.chdir(tmp_path)
    (tmp_path / "flat.py").write_text(FLAT_VIDEO_FACTORY)
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "c.mp4", [(40 * j, 100, 90) for j in range(6)], (8, 8))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "protect.csv").write_text("mine\n")  # a file vaelens did not write

    def never(*args, **kwargs):
        raise AssertionError("attacked before --out was claimed")

    monkeypatch.setattr(vaelens.evaluation._protect_video, "protect_clip", never)
    base = ("protect", "--model", "python:flat.py:make", "--images", "clips", "--quiet")
    code, _, stderr = run_cli(*base, "--out", "out")
    assert code == 2 and "was not written by vaelens" in stderr
    assert (tmp_path / "out" / "protect.csv").read_text() == "mine\n"
    code, _, stderr = run_cli(*base, "--out", "o2", "--precision", "bf16")
    assert code == 2 and "--precision is for images" in stderr and not (tmp_path / "o2").exists()
