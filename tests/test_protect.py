"""Image protection (docs/method.md section 9): budget, direction, mask, sizes, transforms, files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vaelens import VaelensError
from vaelens.attacks import Reference, TargetedAttack
from vaelens.evaluation import (
    EVALUATED,
    ProtectConfig,
    RandomTransform,
    _images,
    _protect,
    _protect_writer,
    _transforms,
    evaluation_transforms,
    fit_model,
    holds,
    protect,
    protect_image,
    read_image,
    read_images,
    write_protection,
)
from vaelens.models import ModelConfig, build_model

FAST = dict(steps=12, eot_samples=2)


class PatchVAE(nn.Module):
    """A tiny protocol VAE that takes any H, W divisible by 8: one 8x8 patch -> 2 latents."""

    size_multiple = 8

    def __init__(self, channels: int = 3, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(channels, 4, 8, stride=8, dtype=dtype)
        self.dec = nn.ConvTranspose2d(2, channels, 8, stride=8, dtype=dtype)
        self.grid: tuple[int, int] = (1, 1)

    def encode(self, x):
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
        h = torch.tanh(self.enc(x))  # (B, 4, H/8, W/8)
        self.grid = tuple(h.shape[-2:])
        return h[:, :2].flatten(1), h[:, 2:].flatten(1)

    def decode(self, z):
        return torch.sigmoid(self.dec(z.view(len(z), 2, *self.grid)))


def image(h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)


@pytest.fixture
def model():
    return PatchVAE()


def test_within_eps_range_and_towards_target_after_png_round_trip(model, tmp_path):
    images = {"a.png": image(16, 24), "b.png": image(32, 16, seed=1)}
    images["a.png"][0, :4] = 0  # pixels at the ends of the range must stay in [0, 255]
    images["a.png"][1, :4] = 255
    config = ProtectConfig(eps=6.5, evaluate=False, **FAST)  # rounding would reach 7: the clip must hold it at 6
    results = protect(model, images, config, progress=False)
    write_protection(results, tmp_path, config)
    for name, original in images.items():
        written = read_image(tmp_path / name)
        assert written.shape == original.shape
        change = (written.int() - original.int()).abs()
        assert change.max() <= 6 and change.max() > 0
        p = results[name]
        assert p.distance_after < p.distance_before
        assert torch.equal(written, p.image)


def test_the_code_moves_towards_the_target_image(model):
    x, target = image(16, 16), image(16, 16, seed=5)
    p = protect_image(model, x, ProtectConfig(eps=16, evaluate=False, **FAST), target=target)
    with torch.no_grad():
        mu = lambda t: model.encode(t[None].float() / 255)[0]  # noqa: E731
        before = (mu(x) - mu(target)).norm()
        after = (mu(p.image) - mu(target)).norm()
    assert after < before
    assert p.distance_before == pytest.approx(float(before), rel=1e-5)
    assert p.distance_after == pytest.approx(float(after), rel=1e-5)


def test_a_larger_budget_pulls_further(model):
    x = image(16, 16)
    small, large = (protect_image(model, x, ProtectConfig(eps=e, evaluate=False, **FAST)) for e in (2, 24))
    assert large.distance_after < small.distance_after < small.distance_before


def test_mask_leaves_unmasked_pixels_unchanged(model):
    x = image(16, 16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 2:10] = True
    p = protect_image(model, x, ProtectConfig(evaluate=False, **FAST), mask=mask)
    assert torch.equal(p.image[:, ~mask], x[:, ~mask])
    assert (p.image[:, mask].int() - x[:, mask].int()).abs().max() > 0


@pytest.mark.parametrize("shape", [(3, 13, 21), (1, 9, 30), (3, 5, 7)])
def test_any_size_is_protected_at_its_own_resolution(shape, tmp_path):
    model = PatchVAE(channels=shape[0])
    x = image(shape[1], shape[2], shape[0])
    config = ProtectConfig(evaluate=True, **FAST)
    results = protect(model, {"odd.jpg": x}, config, progress=False)
    paths = write_protection(results, tmp_path, config)
    assert paths["odd.jpg"].name == "odd.png"
    written = read_image(paths["odd.jpg"], channels=shape[0])
    assert written.shape == x.shape
    assert (written.int() - x.int()).abs().max() <= 8
    assert results["odd.jpg"].distance_after < results["odd.jpg"].distance_before


def test_padding_mirrors_the_image_and_decoding_crops_back(model):
    fitted = fit_model(model, (3, 13, 21))
    assert fitted is not model and fit_model(model, (3, 16, 24)) is model
    x = torch.rand(1, 3, 13, 21)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect")
    torch.testing.assert_close(fitted.encode(x)[0], model.encode(padded)[0])
    assert fitted.decode(fitted.encode(x)[0]).shape == x.shape


def test_fixed_input_shape_is_required():
    model = build_model(ModelConfig("conv", (1, 16, 16), latent_dim=3, channels=(4, 8)))
    p = protect_image(model, image(16, 16, 1), ProtectConfig(evaluate=False, **FAST))
    assert p.distance_after < p.distance_before
    with pytest.raises(VaelensError, match="takes only 1x16x16 inputs"):
        protect(model, {"big.png": image(16, 24, 1)}, ProtectConfig(), progress=False)


def test_float64_model_with_float32_inputs():
    model = PatchVAE(dtype=torch.float64)
    p = protect_image(model, image(16, 16), ProtectConfig(robust=("jpeg", "noise"), **FAST))
    assert p.image.dtype == torch.uint8 and p.distance_after < p.distance_before
    assert set(p.checks) == set(EVALUATED)


@pytest.mark.parametrize("kind", ["jpeg", "resize", "blur", "noise", "vae"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transforms_keep_shape_and_range(kind, dtype):
    model = PatchVAE(dtype=torch.float64)
    for shape in [(2, 3, 16, 24), (1, 1, 13, 9)]:
        if kind == "vae" and shape[1] == 1:
            continue
        x = torch.rand(shape, dtype=dtype)
        y = evaluation_transforms(fit_model(model, shape[1:]), seed=0)[kind](x.double() if kind == "vae" else x)
        assert y.shape == x.shape
        assert y.min() >= 0 and y.max() <= 1
        assert not torch.equal(y, x.to(y.dtype))


def test_transforms_do_what_they_say():
    x = torch.rand(1, 3, 16, 16)
    pixels = (x[0] * 255).round().to(torch.uint8).numpy().transpose(1, 2, 0)
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=75)
    expected = torch.from_numpy(np.asarray(Image.open(buf)).transpose(2, 0, 1).copy()).float() / 255
    t = evaluation_transforms(PatchVAE(), seed=3)
    torch.testing.assert_close(t["jpeg"](x)[0], expected)
    flat = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(t["blur"](flat), flat)  # a blur keeps a flat image
    torch.testing.assert_close(t["resize"](flat), flat)
    noise = t["noise"](flat) - flat
    assert torch.equal(t["noise"](flat), t["noise"](flat))  # seeded: the same noise every call
    assert 3 / 255 < noise.std() < 5 / 255


def test_straight_through_jpeg_gradient_is_the_identity():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    (_transforms.jpeg(x, 75) * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_evaluation_applies_exactly_the_transforms_it_names(model, monkeypatch):
    applied: list[str] = []
    real = _protect.evaluation_transforms

    def spy(m, seed=0):
        return {k: (lambda x, k=k, f=f: applied.append(k) or f(x)) for k, f in real(m, seed).items()}

    monkeypatch.setattr(_protect, "evaluation_transforms", spy)
    x = image(16, 16)
    p = protect_image(model, x, ProtectConfig(**FAST))
    assert applied == [k for k in EVALUATED for _ in (0, 1)]  # each to the clean and the protected image
    assert list(p.checks) == list(EVALUATED)
    transforms = real(model, 0)
    target = Reference.of(model, torch.full((1, 3, 16, 16), 0.5))
    for kind, check in p.checks.items():  # each distance is that of the named transform, applied directly
        y = transforms[kind](p.image[None].float() / 255)
        with torch.no_grad():
            d = float((model.encode(y)[0] - target.mu).norm())
        assert check.distance == pytest.approx(d, rel=1e-5)
        assert check.held == holds(p.pull, check.distance_clean, check.distance)


def test_holds_definition():
    assert holds(pull=2.0, distance_clean=10.0, distance=9.0)  # half the pull remains
    assert not holds(pull=2.0, distance_clean=10.0, distance=9.1)
    assert not holds(pull=0.0, distance_clean=10.0, distance=5.0)  # nothing was pulled


def test_robust_optimisation_draws_the_named_kinds(model, monkeypatch):
    made: list[RandomTransform] = []
    real = _protect.RandomTransform
    monkeypatch.setattr(_protect, "RandomTransform", lambda kinds, seed: made.append(real(kinds, seed)) or made[-1])
    protect_image(
        model, image(16, 16), ProtectConfig(robust=("blur", "resize"), evaluate=False, steps=10, eot_samples=3)
    )
    kinds = {k for k, _ in made[0].drawn}
    assert kinds <= {"identity", "blur", "resize"} and {"blur", "resize"} <= kinds
    assert len(made[0].drawn) >= 3 * 10


def test_eot_objective_is_the_mean_over_draws(model):
    from vaelens.attacks import Reference, divergence
    from vaelens.attacks._apgd import auto_pgd

    x, xt = torch.rand(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5)
    plain = TargetedAttack(model, 4 / 255, "linf", "latent", steps=5)(x, xt)
    same = TargetedAttack(model, 4 / 255, "linf", "latent", steps=5, transform=lambda t: t, samples=3)(x, xt)
    torch.testing.assert_close(plain, same)  # the identity transform leaves the attack as it was
    # Draws alternate between the identity and "replace by the target", whose objective is 0: the EOT
    # value is then exactly half the plain objective (a sum would give all of it, one draw all or 0).
    calls = []

    def alternate(t):
        calls.append(1)
        return t if len(calls) % 2 else xt.to(t).expand_as(t)

    ref = Reference.of(model, xt)
    best, value, _ = auto_pgd(model, x, ref, "latent", torch.zeros_like(x), 4 / 255, "linf", 5, False,
                              transform=alternate, samples=2)  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(value, 0.5 * divergence(model, best, ref, "latent"))
    assert len(calls) % 2 == 0 and len(calls) >= 2 * 5


def test_config_refuses_bad_values():
    with pytest.raises(VaelensError, match="choose from jpeg, resize, blur, noise"):
        ProtectConfig(robust=("jpeg", "crop"))
    with pytest.raises(VaelensError, match="8-bit units"):
        ProtectConfig(eps=0)
    with pytest.raises(VaelensError, match="8-bit units"):
        ProtectConfig(eps=0.5)
    with pytest.raises(VaelensError, match="steps"):
        ProtectConfig(steps=0)
    with pytest.raises(VaelensError, match="more than once"):
        ProtectConfig(robust=("jpeg", "jpeg"))


def test_bad_inputs(model, tmp_path):
    with pytest.raises(VaelensError, match="not a directory"):
        read_images(tmp_path / "missing")
    with pytest.raises(VaelensError, match="no image files"):
        read_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(VaelensError, match="cannot read .*broken.png"):
        read_images(tmp_path)
    with pytest.raises(VaelensError, match="the mask is 8x8"):
        protect(model, {"a.png": image(16, 16)}, mask=torch.ones(8, 8, dtype=torch.bool), progress=False)
    with pytest.raises(VaelensError, match="uint8"):
        protect_image(model, torch.rand(3, 16, 16))
    with pytest.raises(VaelensError, match="no images"):
        protect(model, {}, progress=False)


def test_outputs_and_summary(model, tmp_path):
    images_dir = tmp_path / "in"
    images_dir.mkdir()
    _images.write_png(images_dir / "a.png", image(16, 16))
    _images.write_png(images_dir / "b.png", image(24, 16, seed=2))
    config = ProtectConfig(**FAST)
    results = protect(model, read_images(images_dir), config, progress=False)
    out = tmp_path / "out"
    write_protection(results, out, config, {"images": str(images_dir)})
    rows = list(csv.DictReader((out / "protect.csv").read_text().splitlines()))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert {f"{t}_held" for t in EVALUATED} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and set(summary["held"]) == set(EVALUATED)
    assert summary["held"]["jpeg"] == sum(int(r["jpeg_held"]) for r in rows)
    marker = json.loads((out / ".vaelens.json").read_text())
    assert marker["complete"] and marker["command"] == "protect"
    with pytest.raises(VaelensError, match="another config"):
        write_protection(results, out, ProtectConfig(eps=4, **FAST))


MODEL_FILE = """
import torch
from torch import nn


class PatchVAE(nn.Module):
    size_multiple = 8

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.Conv2d(3, 4, 8, stride=8)
        self.dec = nn.ConvTranspose2d(2, 3, 8, stride=8)
        self.grid = (1, 1)

    def encode(self, x):
        h = torch.tanh(self.enc(x))
        self.grid = tuple(h.shape[-2:])
        return h[:, :2].flatten(1), h[:, 2:].flatten(1)

    def decode(self, z):
        return torch.sigmoid(self.dec(z.view(len(z), 2, *self.grid)))


def make():
    return PatchVAE()
"""


def test_cli_end_to_end(run_cli, tmp_path):
    (tmp_path / "tinyvae.py").write_text(MODEL_FILE)
    spec = f"python:{tmp_path / 'tinyvae.py'}:make"
    images = tmp_path / "images"
    images.mkdir()
    originals = {"a.png": image(16, 24), "b.jpg": image(13, 20, seed=1)}
    for name, pixels in originals.items():
        _images.write_png(images / name, pixels)  # b.jpg holds PNG bytes: Pillow reads it by content
    out = tmp_path / "out"
    args = ["protect", "--model", spec, "--images", images, "--out", out, "--steps", "10", "--eot-samples", "2"]
    code, stdout, stderr = run_cli(*args, "--robust", "jpeg,blur", "--quiet")
    assert code == 0, stderr
    assert "held after: jpeg" in stdout and "vae" in stdout
    for name, pixels in originals.items():
        written = read_image(out / _protect_writer.output_name(name))
        assert written.shape == pixels.shape and (written.int() - pixels.int()).abs().max() <= 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protect"]["robust"] == ["jpeg", "blur"] and summary["n"] == 2
    code, _, stderr = run_cli(*args, "--eps", "4", "--quiet")
    assert code == 2 and "--overwrite" in stderr  # another config's output is not replaced silently
    code, _, stderr = run_cli(*args, "--no-evaluate", "--quiet", "--overwrite")
    assert code == 0 and "held" not in json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--robust", "jpeg,crop"], "choose from jpeg, resize, blur, noise"),
        (["--eps", "0"], "8-bit units"),
        (["--images", "missing"], "not a directory"),
        (["--mask", "mask.png"], "the mask is 8x8"),
        (["--target", "nothing.png"], "does not exist"),
    ],
)
def test_cli_bad_inputs_are_one_line(run_cli, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tinyvae.py").write_text(MODEL_FILE)
    (tmp_path / "images").mkdir()
    _images.write_png(tmp_path / "images" / "a.png", image(16, 16))
    _images.write_png(tmp_path / "mask.png", image(8, 8, 1))
    args = ["protect", "--model", "python:tinyvae.py:make", "--images", "images", "--out", "out", "--quiet"]
    code, _, stderr = run_cli(*args, *extra)
    assert code == 2 and message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.slow  # importing diffusers takes seconds
def test_diffusers_autoencoder_at_a_size_it_cannot_take():
    diffusers = pytest.importorskip("diffusers")
    from vaelens.adapters import from_diffusers

    torch.manual_seed(0)
    blocks = ("DownEncoderBlock2D", "DownEncoderBlock2D")
    ups = ("UpDecoderBlock2D", "UpDecoderBlock2D")
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=blocks, up_block_types=ups, layers_per_block=1,
        latent_channels=2, norm_num_groups=4,
    )  # fmt: skip
    model = from_diffusers(vae)  # takes H, W divisible by 2
    x = image(15, 21)
    p = protect_image(model, x, ProtectConfig(steps=8, robust=("jpeg",), eot_samples=1))
    assert p.image.shape == x.shape and (p.image.int() - x.int()).abs().max() <= 8
    assert p.distance_after < p.distance_before and set(p.checks) == set(EVALUATED)
    with pytest.raises(VaelensError, match="force_upcast"):  # diffusers' default config declares it
        protect_image(model, x, ProtectConfig(steps=1, precision="fp16"))
