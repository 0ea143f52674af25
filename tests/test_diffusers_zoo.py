"""Every autoencoder class the installed diffusers exports, through the one adapter registry.

Each class with an encoder is built from a tiny config (tests/diffusers_zoo.py) and its top
eigenvalue of G(x) for the mean kind (and the stochastic kind where the posterior is Gaussian) is
checked against a brute-force Jacobian (torch.autograd.functional.jacobian, float64). Classes
without an encoder, or that need a library outside the extras, are named in the registry and
refused in one line. The README's coverage table is the registry's.
"""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest
import torch

from vaelens import VaelensError
from vaelens.adapters import REGISTRY, UnknownClassWarning, coverage_table, from_diffusers
from vaelens.geometry import pullback_metric

diffusers = pytest.importorskip("diffusers")
autoencoders = pytest.importorskip("diffusers.models.autoencoders")
from diffusers_zoo import TINY  # noqa: E402 - after the importorskip that needs diffusers

FAST = {  # one of each kind of posterior and layout in the fast tier; the rest are marked slow (3-60 s each)
    "AutoencoderKL", "AutoencoderTiny", "AutoencoderDC", "AutoencoderSAME", "Cosmos3AVAEAudioTokenizer",
}  # fmt: skip


def exported() -> list[str]:
    """The autoencoder classes (models with parameters) the installed diffusers exports."""
    return sorted(
        name
        for name, cls in vars(autoencoders).items()
        if inspect.isclass(cls) and issubclass(cls, diffusers.ModelMixin) and hasattr(diffusers, name)
    )


def supported() -> list:
    names = [n for n in exported() if REGISTRY[("diffusers", n)].refusal is None]
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


FLOAT32_ONLY = {"MMAudioVAE"}  # its mel front end casts to float32 inside: checked in float32, to 1e-4
ZERO_INIT = {"AutoencoderSAME"}  # output projections start at zero: the Jacobian is 0 until trained


def build(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    config, shape = TINY[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some classes warn about their own config defaults
        model = getattr(diffusers, name)(**config).eval()
    if name in ZERO_INIT:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
    return (model if name in FLOAT32_ONLY else model.double()), shape


def brute_top(vae: torch.nn.Module, x: torch.Tensor, kind: str) -> float:
    def f(flat: torch.Tensor) -> torch.Tensor:
        mu, logvar = vae.encode(flat.view(1, *x.shape[1:]))
        return torch.cat([mu[0]] if kind == "mean" else [mu[0], (0.5 * logvar[0]).exp()])

    dtype = next(vae.parameters()).dtype
    jac = torch.autograd.functional.jacobian(f, x.to(dtype).flatten())  # (m, d)
    return torch.linalg.eigvalsh(jac @ jac.T)[-1].item()


def test_every_exported_class_is_in_the_registry_and_every_supported_one_has_a_tiny_config():
    names = exported()
    assert len(names) >= 32
    missing = [n for n in names if ("diffusers", n) not in REGISTRY]
    assert not missing, f"add these diffusers classes to adapters/_registry.py: {missing}"
    untested = [n for n in names if REGISTRY[("diffusers", n)].refusal is None and n not in TINY]
    assert not untested


@pytest.mark.filterwarnings("ignore::vaelens.geometry.VmapFallbackWarning")  # in-place ops: the autograd path
@pytest.mark.parametrize("name", supported())
def test_top_eigenvalue_matches_brute_force(name):
    model, shape = build(name)
    vae = from_diffusers(model)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))  # float32 into a float64 model
    kinds = ["mean"] if vae.deterministic else ["mean", "stochastic"]
    assert vae.deterministic == (REGISTRY[("diffusers", name)].posterior in ("deterministic", "vq"))
    rel = 1e-4 if name in FLOAT32_ONLY else 1e-7
    for kind in kinds:
        top = pullback_metric(vae, x, kind).eigenvalues(method="exact")[0, 0].item()
        brute = brute_top(vae, x, kind)
        assert top == pytest.approx(brute, rel=rel, abs=1e-12), kind
        assert top > 0  # the encoder reads every input the layout gives it


@pytest.mark.parametrize("name", [n for n in exported() if REGISTRY[("diffusers", n)].refusal is not None])
def test_refused_classes_are_named_in_one_line(name):
    cls = getattr(diffusers, name)
    model = cls.__new__(cls)  # the class is what is refused: no weights needed
    with pytest.raises(VaelensError) as e:
        from_diffusers(model)
    message = str(e.value)
    assert name in message and "\n" not in message and "wrap" in message


def test_an_unknown_class_with_a_latent_dist_is_read_as_gaussian_with_a_warning():
    from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

    class FutureVAE(diffusers.ModelMixin):  # a class a newer diffusers might add
        def __init__(self) -> None:
            super().__init__()
            self.enc = torch.nn.Conv2d(3, 4, 2, stride=2)
            self.dec = torch.nn.ConvTranspose2d(2, 3, 2, stride=2)

        def encode(self, x):
            return AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(self.enc(x)))

        def decode(self, z):
            return DecoderOutput(sample=self.dec(z))

    torch.manual_seed(0)
    with pytest.warns(UnknownClassWarning, match="FutureVAE"):
        vae = from_diffusers(FutureVAE().double())
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    top = pullback_metric(vae, x, "stochastic").eigenvalues(method="exact")[0, 0].item()
    assert top == pytest.approx(brute_top(vae, x, "stochastic"), rel=1e-7)
    assert vae.decode(vae.encode(x.double())[0]).shape == x.shape


def test_readme_coverage_table_is_the_registry():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    found = re.search(r"<!-- coverage:start -->\n(.*?)<!-- coverage:end -->", readme, re.S)
    assert found, "README.md lost its coverage table markers"
    assert found.group(1) == coverage_table(), "regenerate it: python scripts/coverage_table.py"


def test_video_and_audio_inputs_are_checked_against_the_layout():
    vae = from_diffusers(build("AutoencoderKLWan")[0])
    with pytest.raises(VaelensError, match=r"video inputs \(B, 3, T, H, W\)"):
        pullback_metric(vae, torch.rand(1, 3, 8, 8), "mean").eigenvalues()
    with pytest.raises(VaelensError, match="1 \\+ a multiple of 4 \\(5, 9"):
        pullback_metric(vae, torch.rand(1, 3, 4, 8, 8), "mean").eigenvalues()
    audio = from_diffusers(build("AutoencoderOobleck")[0])
    with pytest.raises(VaelensError, match="divisible by 4"):
        pullback_metric(audio, torch.rand(1, 1, 30), "mean").eigenvalues()


def test_latent_space_diffusion_normalises_and_raw_does_not():
    model, shape = build("AutoencoderKLQwenImage")  # latents_mean (0.1, -0.2), latents_std (2, 0.5)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(3)).double()
    diffusion, raw = from_diffusers(model), from_diffusers(model, latent_space="raw")
    assert (diffusion.latent_space, raw.latent_space) == ("diffusion", "raw")
    (mu_d, lv_d), (mu_r, lv_r) = diffusion.encode(x), raw.encode(x)
    mean = torch.tensor([0.1, -0.2], dtype=torch.float64).repeat_interleave(mu_r.shape[1] // 2)
    std = torch.tensor([2.0, 0.5], dtype=torch.float64).repeat_interleave(mu_r.shape[1] // 2)
    torch.testing.assert_close(mu_d, (mu_r - mean) / std)
    torch.testing.assert_close(lv_d, lv_r - 2 * std.log())
    torch.testing.assert_close(diffusion.decode(mu_d), raw.decode(mu_r))  # the decoder sees the same latent
    with pytest.raises(VaelensError, match="diffusion or raw"):
        from_diffusers(model, latent_space="scaled")


def test_latents_are_remembered_by_input_shape_not_by_size():
    vae = from_diffusers(build("AutoencoderKL")[0])
    tall, wide = torch.rand(1, 3, 16, 8).double(), torch.rand(1, 3, 8, 16).double()  # same latent size k
    z_tall, z_wide = vae.encode(tall)[0], vae.encode(wide)[0]
    assert z_tall.shape == z_wide.shape
    assert vae.decode(z_wide).shape == wide.shape  # the last input of that size
    with vae.decoding_for(tall.shape[1:]):  # interleaved: say which input the latent came from
        assert vae.decode(z_tall).shape == tall.shape
    vae.encode(tall)
    assert vae.decode(z_tall).shape == tall.shape


@pytest.mark.slow
def test_checkpointing_gives_the_same_metric_and_leaves_the_model_as_it_was():
    model, shape = build("AutoencoderKL")
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    plain = from_diffusers(model)
    top = pullback_metric(plain, x, "stochastic").lanczos(2, iters=8).values
    checkpointed = from_diffusers(model)
    checkpointed.checkpointing = True
    torch.testing.assert_close(pullback_metric(checkpointed, x, "stochastic").lanczos(2, iters=8).values, top)
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_half_precision_model_from_a_python_factory_is_upcast_on_a_copy(tmp_path):
    from vaelens.adapters import UpcastNote
    from vaelens.experiments import load_model

    (tmp_path / "zoo_half_factory.py").write_text(
        "import torch\n\n"
        "class Half(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.enc, self.dec = torch.nn.Linear(4, 4), torch.nn.Linear(2, 4)\n"
        "    def encode(self, x):\n"
        "        return self.enc(x.flatten(1)).chunk(2, dim=1)\n"
        "    def decode(self, z):\n"
        "        return self.dec(z)\n\n"
        "MODEL = Half().half()\n\n"
        "def make():\n"
        "    return MODEL\n"
    )
    with pytest.warns(UpcastNote, match="float32 copy"):
        vae = load_model(f"python:{tmp_path / 'zoo_half_factory.py'}:make")
    assert next(vae.parameters()).dtype == torch.float32  # a copy: the user's half model is unchanged
    assert next(__import__("zoo_half_factory").MODEL.parameters()).dtype == torch.float16


def test_pythae_and_monai_rows_agree_with_their_adapters():
    from vaelens.adapters import _pythae
    from vaelens.adapters._registry import refusals

    assert set(refusals("pythae")) == set(_pythae.REFUSED)
    rows = {name: e for (library, name), e in REGISTRY.items() if library == "pythae"}
    assert len(rows) == 25  # pythae 0.1.2's whole zoo
    assert {n for n, e in rows.items() if "Hamiltonian" in e.note} == set(_pythae.FLOW_REFINED)
    assert REGISTRY[("monai", "AutoencoderKL")].posterior == "sigma"
