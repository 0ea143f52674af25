"""Video inputs end to end (docs/method.md section 1, modalities): the frames a clip is cut to follow
the model's temporal compression; ``compare`` and ``certify`` load models in the latent space and with
the checkpointing asked for; and, slow, a real diffusers video VAE class through the console script
(audit, attack, compare, protect) on a folder of tiny clips."""

from __future__ import annotations

import pytest
import torch

from vaelens import VaelensError
from vaelens._protocol import InputSpec
from vaelens.data import MediaOptions

diffusers = pytest.importorskip("diffusers")
from diffusers_zoo import TINY  # noqa: E402 - after the importorskip that needs diffusers


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
