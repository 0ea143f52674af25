"""Third-party VAEs through vaelens.adapters and ``--model SPEC``: diffusers, pythae, MONAI, wrap.

Every adapter is checked against brute-force Jacobians (torch.autograd.functional.jacobian of the
flattened (mu, sigma) map, float64) on a small input, for the mean and stochastic kinds; Lanczos
with and without forward-mode AD against the exact spectrum; the user's model unchanged after
every call; pickled folders refused; and the CLI end to end on folders saved here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaelens
from vaelens import VaelensError
from vaelens.adapters import UpcastNote, adapt, from_diffusers, from_monai, from_pythae, load_pythae, wrap
from vaelens.experiments import load_model
from vaelens.geometry import LanczosNotice, pullback_metric

diffusers = pytest.importorskip("diffusers")
pythae_models = pytest.importorskip("pythae.models")
monai_nets = pytest.importorskip("monai.networks.nets")


# -- tiny random models built from configs ---------------------------------------------------------
def tiny_kl(blocks=(32, 32, 64, 64)) -> torch.nn.Module:
    """A Stable-Diffusion-style AutoencoderKL with attention in its mid blocks (default processor)."""
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    ).eval()


def tiny_asymmetric() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.AsymmetricAutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2, down_block_out_channels=(16, 16),
        up_block_types=("UpDecoderBlock2D",) * 2, up_block_out_channels=(16, 16), norm_num_groups=8,
    ).eval()  # fmt: skip


def tiny_monai(dims: int = 2, channels: int = 3, widths: tuple[int, int] = (8, 16)) -> torch.nn.Module:
    """MONAI's AutoencoderKL on images (dims 2) or volumes (dims 3), attention in its deepest level."""
    torch.manual_seed(0)
    return monai_nets.AutoencoderKL(
        spatial_dims=dims, in_channels=channels, out_channels=channels, channels=widths, latent_channels=2,
        num_res_blocks=1, attention_levels=(False, True), norm_num_groups=widths[0],
    ).eval()  # fmt: skip


def tiny_monai_3d() -> torch.nn.Module:
    return tiny_monai(3, 1, (4, 8))


def tiny_pythae(name: str, conv: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config_cls = getattr(pythae_models, f"{name}Config", None) or getattr(pythae_models, f"{name}_Config")
    config = config_cls(input_dim=(1, 28, 28), latent_dim=4)
    if conv:
        from pythae.models.nn.benchmarks.mnist import Decoder_ResNet_AE_MNIST, Encoder_ResNet_VAE_MNIST

        model = getattr(pythae_models, name)(
            config, encoder=Encoder_ResNet_VAE_MNIST(config), decoder=Decoder_ResNet_AE_MNIST(config)
        )
    else:
        model = getattr(pythae_models, name)(config)
    return model.eval()


def brute_force_eigenvalues(vae: torch.nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Eigenvalues of J^T J with J from torch.autograd.functional.jacobian, sample by sample."""
    out = []
    for xi in x.double():

        def f(flat: torch.Tensor, shape=xi.shape) -> torch.Tensor:
            mu, logvar = vae.encode(flat.view(1, *shape))
            rows = [mu[0]] if kind == "mean" else [mu[0], (0.5 * logvar[0]).exp()]
            return torch.cat(rows)

        jac = torch.autograd.functional.jacobian(f, xi.flatten())  # (m, d)
        out.append(torch.linalg.eigvalsh(jac @ jac.T).flip(0))
    return torch.stack(out)


def snapshot(model: torch.nn.Module) -> dict:
    """What must not change: weights, modes, requires_grad flags and attention processors."""
    procs = getattr(model, "attn_processors", {})
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "grads": [p.requires_grad for p in model.parameters()],
        "procs": {k: type(v) for k, v in procs.items()},
        "dtype": next(model.parameters()).dtype,
    }


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"] and after["grads"] == before["grads"]
    assert after["procs"] == before["procs"] and after["dtype"] == before["dtype"]
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


CASES = {
    "diffusers": (lambda: from_diffusers(tiny_kl().double()), (2, 3, 16, 16)),
    "diffusers-asymmetric": (lambda: from_diffusers(tiny_asymmetric().double()), (2, 3, 8, 8)),
    "monai": (lambda: from_monai(tiny_monai().double()), (2, 3, 8, 8)),
    "monai-3d": (lambda: from_monai(tiny_monai_3d().double()), (2, 1, 4, 4, 4)),
    "pythae-vae": (lambda: from_pythae(tiny_pythae("VAE").double()), (2, 1, 28, 28)),
    "pythae-betavae-conv": (lambda: from_pythae(tiny_pythae("BetaVAE", conv=True).double()), (2, 1, 28, 28)),
    "pythae-iwae": (lambda: from_pythae(tiny_pythae("IWAE").double()), (2, 1, 28, 28)),
    "pythae-vamp": (lambda: from_pythae(tiny_pythae("VAMP").double()), (2, 1, 28, 28)),
}


# the slow tier (pytest -m slow) holds the pairs whose brute force takes a minute on two cores
_SLOW_PAIRS = {("stochastic", "diffusers-asymmetric"), ("stochastic", "monai"), ("mean", "diffusers")}


@pytest.mark.parametrize(
    "kind, case",
    [
        pytest.param(kind, case, marks=[pytest.mark.slow] if (kind, case) in _SLOW_PAIRS else [])
        for kind in ("mean", "stochastic")
        for case in sorted(CASES)
    ],
)
def test_adapter_eigenvalues_match_brute_force(case, kind):
    make, shape = CASES[case]
    vae = make()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))  # float32 into a float64 model
    exact = pullback_metric(vae, x, kind).eigenvalues(method="exact")
    brute = brute_force_eigenvalues(vae, x, kind)[:, : exact.shape[1]]
    torch.testing.assert_close(exact, brute.clamp_min(0), rtol=1e-7, atol=1e-9 * brute.max().item())


@pytest.mark.slow
@pytest.mark.parametrize("forward_ad", [True, False])
def test_lanczos_with_and_without_forward_ad_matches_exact(forward_ad, monkeypatch):
    vae = from_diffusers(tiny_kl().double())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    if not forward_ad:  # as on a model whose attention kernel has no forward-mode AD: double VJP

        def no_jvp(*args, **kwargs):
            raise NotImplementedError("Trying to use forward AD with _scaled_dot_product_flash_attention_for_cpu")

        monkeypatch.setattr(vaelens.geometry._jacobian, "jvp", no_jvp)
    metric = pullback_metric(vae, x, "stochastic")
    top = metric.lanczos(3, iters=32).values
    exact = pullback_metric(vae, x, "stochastic").eigenvalues(3, method="exact")
    torch.testing.assert_close(top, exact, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_default_attention_processor_kept_and_fused_kernel_never_breaks():
    """The model keeps its default (fused SDPA) processor; derivatives still work through it."""
    kl = tiny_kl()
    before = snapshot(kl)
    vae = from_diffusers(kl)
    x = torch.rand(1, 3, 16, 16)
    metric = pullback_metric(vae, x, "mean")
    assert metric.lanczos(1, iters=8).values.shape == (1, 1)
    assert metric.eigenvalues(method="exact").shape == (1, 16)
    vaelens.PGD(vae, eps=0.5, objective="kl", steps=2)(x)
    vaelens.attack_damage(vae, x, x)
    assert_unchanged(kl, before)
    assert all("2_0" in type(p).__name__ for p in kl.attn_processors.values())


@pytest.mark.parametrize(
    "case",
    [pytest.param("diffusers", marks=pytest.mark.slow), pytest.param("monai", marks=pytest.mark.slow), "pythae-vae"],
)
def test_user_model_unchanged_after_every_call(case):
    make, shape = CASES[case]
    vae = make()
    inner = vae.inner
    inner.train()  # a model left in training mode must come back in training mode
    inner.requires_grad_(True)
    before = snapshot(inner)
    x = torch.rand(*shape)
    for kind in ("mean", "stochastic", "fisher", "output"):
        pullback_metric(vae, x, kind).eigen(2)
    vaelens.EigenAttack(vae, eps=0.5)(x)
    vaelens.PGD(vae, eps=0.5, steps=2)(x)
    vaelens.attacks.APGD(vae, eps=0.5, steps=3)(x)
    vaelens.attack_damage(vae, x, x.flip(0))
    assert_unchanged(inner, before)
    assert all(p.grad is None for p in inner.parameters())


def test_adapter_maps_ranges_and_flattens_latents():
    kl = tiny_kl()
    vae = from_diffusers(kl, latent_space="raw")
    x = torch.rand(2, 3, 16, 24)  # any size divisible by 8
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 4 * 2 * 3)
    direct = kl.encode(2 * x - 1).latent_dist
    torch.testing.assert_close(mu, direct.mean.flatten(1))
    torch.testing.assert_close(logvar, direct.logvar.flatten(1))
    recon = vae.decode(mu)
    torch.testing.assert_close(recon, (kl.decode(direct.mean).sample + 1) / 2)
    assert vae.size_multiple == 8 and vae.input_channels == 3
    scaled = from_diffusers(kl)  # the default: the latent Stable Diffusion's UNet sees, z * 0.18215
    mu_s, logvar_s = scaled.encode(x)
    torch.testing.assert_close(mu_s, 0.18215 * mu)
    torch.testing.assert_close(logvar_s, logvar + 2 * math.log(0.18215))
    torch.testing.assert_close(scaled.decode(mu_s), recon)


def test_sizes_not_divisible_by_8_and_wrong_channels_get_one_line_errors():
    vae = from_diffusers(tiny_kl())
    with pytest.raises(VaelensError, match="divisible by 8"):
        pullback_metric(vae, torch.rand(1, 3, 20, 20), "mean").eigenvalues()
    with pytest.raises(VaelensError, match=r"\(B, 3, H, W\)"):
        vaelens.PGD(vae, eps=1.0)(torch.rand(1, 1, 16, 16))


def test_tiny_autoencoder_is_mean_only_with_a_clear_error():
    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
    ).eval()  # fmt: skip
    vae = from_diffusers(tiny)
    x = torch.rand(1, 3, 16, 16)
    assert vae.deterministic
    assert pullback_metric(vae, x, "mean").eigenvalues().shape == (1, 16)
    assert pullback_metric(vae, x, "output").eigenvalues().shape == (1, 16)
    for kind in ("stochastic", "fisher", "output-stochastic"):
        with pytest.raises(VaelensError, match="deterministic encoder"):
            pullback_metric(vae, x, kind)
    with pytest.raises(VaelensError, match="deterministic encoder"):
        vaelens.PGD(vae, eps=0.5, objective="kl", steps=2)(x)
    assert vaelens.PGD(vae, eps=0.5, objective="latent", steps=2)(x).shape == x.shape


def test_pythae_deterministic_and_refused_models():
    ae = from_pythae(tiny_pythae("AE"))
    x = torch.rand(2, 1, 28, 28)
    assert ae.deterministic and pullback_metric(ae, x, "mean").eigenvalues().shape == (2, 4)
    with pytest.raises(VaelensError, match="deterministic"):
        pullback_metric(ae, x, "fisher")
    model = tiny_pythae("VQVAE")
    vq = from_pythae(model)
    assert vq.deterministic
    # decoding quantises as pythae's own forward does, and stays vmappable (no fallback warning)
    torch.testing.assert_close(vq.decode(vq.encode(x)[0]), model({"data": x}).recon_x)
    assert pullback_metric(vq, x, "output").eigenvalues().shape == (2, 4)
    for name in ("SVAE", "PoincareVAE", "VAE_IAF"):
        with pytest.raises(VaelensError, match="not the diagonal Gaussian"):
            from_pythae(tiny_pythae(name))
    with pytest.warns(vaelens.adapters.FlowPosteriorWarning):
        from_pythae(tiny_pythae("HVAE"))


def test_monai_sigma_becomes_logvar():
    net = tiny_monai()
    vae = from_monai(net)
    x = torch.rand(2, 3, 8, 8)
    mu, logvar = vae.encode(x)
    z_mu, z_sigma = net.encode(x)
    torch.testing.assert_close(logvar, 2 * z_sigma.log().flatten(1))
    assert adapt(net).__class__ is vae.__class__  # MONAI is adapted, not taken for a protocol module


def test_monai_3d_takes_volumes_and_refuses_images_in_one_line():
    net = tiny_monai_3d()
    vae = from_monai(net)
    v = torch.rand(2, 1, 8, 4, 6)  # (B, C, D, H, W): any sizes divisible by 2
    mu, logvar = vae.encode(v)
    z_mu, z_sigma = net.encode(v)
    torch.testing.assert_close(mu, z_mu.flatten(1))
    torch.testing.assert_close(logvar, 2 * z_sigma.log().flatten(1))
    assert vae.decode(mu).shape == v.shape and vae.input_layout == "volume"
    with pytest.raises(VaelensError, match=r"takes volume inputs \(B, 1, D, H, W\)"):
        pullback_metric(vae, torch.rand(2, 1, 8, 8), "mean")
    with pytest.raises(VaelensError, match="divisible by 2"):
        pullback_metric(vae, torch.rand(2, 1, 8, 5, 8), "mean")


def test_wrap_any_encode_decode_pair():
    lin = torch.nn.Linear(12, 4, dtype=torch.float64)
    dec = torch.nn.Linear(2, 12, dtype=torch.float64)

    def encode(x):
        h = lin(x.flatten(1))
        return h[:, :2], h[:, 2:]

    vae = wrap(encode, lambda z: dec(z).view(-1, 3, 2, 2), input_range=(-1, 1), module=torch.nn.ModuleList([lin, dec]))
    x = torch.rand(3, 3, 2, 2)  # float32 into float64 weights
    values = pullback_metric(vae, x, "mean").eigenvalues()
    w = 2 * lin.weight[:2].detach()  # d mu / dx: the range map doubles the slope
    torch.testing.assert_close(values[0], torch.linalg.eigvalsh(w @ w.T).flip(0))
    with pytest.raises(VaelensError, match="deterministic=True"):
        wrap(lambda x: lin(x.flatten(1)), dec, module=lin).encode(x.double())


def test_half_precision_model_is_upcast_on_a_copy():
    kl = tiny_kl().to(torch.bfloat16)
    with pytest.warns(UpcastNote, match="float32 copy"):
        vae = from_diffusers(kl)
    assert next(kl.parameters()).dtype == torch.bfloat16 and next(vae.parameters()).dtype == torch.float32
    assert torch.isfinite(pullback_metric(vae, torch.rand(1, 3, 16, 16), "mean").eigenvalues()).all()


@pytest.mark.slow
def test_auto_method_switches_to_lanczos_over_budget_and_says_so():
    vae = from_diffusers(tiny_kl().double())
    x = torch.rand(1, 3, 16, 16)
    metric = pullback_metric(vae, x, "mean", memory_budget_gb=1e-6)
    vaelens.geometry._metric._noted.clear()
    with pytest.warns(LanczosNotice, match="using Lanczos"):
        values = metric.eigenvalues(4, iters=16)
    torch.testing.assert_close(values, pullback_metric(vae, x, "mean").eigenvalues(4), rtol=1e-6, atol=1e-9)
    assert pullback_metric(vae, x, "mean").resolve_method("auto") == "exact"
    with pytest.raises(VaelensError, match="unknown method"):
        metric.eigenvalues(method="fast")


def test_missing_extra_names_the_pip_command(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "diffusers":
            raise ImportError("No module named 'diffusers'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(VaelensError, match=r"pip install 'vaelens\[diffusers\]'"):
        vaelens.adapters.require_extra("diffusers")


def test_every_pip_hint_names_an_extra_pyproject_declares(monkeypatch):
    import importlib

    import tomllib

    from vaelens.adapters import _base

    monkeypatch.setattr(_base, "bound_hub_waits", lambda: None)
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert set(_base.EXTRAS.values()) <= set(declared["optional-dependencies"])

    def missing(name, *a, **k):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(VaelensError, match=r"pip install 'vaelens\[diffusers\]'"):  # diffusers' extra brings it
        vaelens.adapters.require_extra("huggingface_hub")
    with pytest.raises(VaelensError, match=r"install it with pip install no_such_library$"):  # no extra: the package
        vaelens.adapters.require_extra("no_such_library.sub")


# -- loading from folders, and the CLI --------------------------------------------------------------
def test_pythae_custom_networks_refused_without_allow_pickle(tmp_path):
    model = tiny_pythae("VAE", conv=True)
    model.save(str(tmp_path / "conv"))
    with pytest.raises(VaelensError, match="--allow-pickle"):
        load_pythae(tmp_path / "conv")
    with pytest.raises(VaelensError, match="runs any code"):
        load_model(f"pythae:{tmp_path / 'conv'}")
    loaded = load_model(f"pythae:{tmp_path / 'conv'}", allow_pickle=True)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x)[0], from_pythae(model).encode(x)[0])


def test_pythae_default_networks_load_without_pickle(tmp_path, monkeypatch):
    model = tiny_pythae("BetaVAE")
    model.save(str(tmp_path / "beta"))
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)  # weights_only loading uses its own unpickler
    loaded = load_model(f"pythae:{tmp_path / 'beta'}")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x)[1], from_pythae(model).encode(x)[1])


def _hub_snapshot(cache, repo: str, model) -> None:
    """A Hugging Face cache entry for ``repo`` (refs/main -> a snapshot holding model.save's files)."""
    entry = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    model.save(str(entry / "snapshots" / commit))


def test_pythae_hub_id_offline_from_the_cache_and_pickles_refused(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_pythae("BetaVAE")
    _hub_snapshot(tmp_path / "hub", "someone/beta-vae", model)
    loaded = load_model("pythae:someone/beta-vae")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded.encode(x)[1], from_pythae(model).encode(x)[1])
    _hub_snapshot(tmp_path / "hub", "someone/conv-vae", tiny_pythae("VAE", conv=True))
    with pytest.raises(VaelensError, match=r"stores custom networks as pickles \(encoder.pkl, decoder.pkl\)"):
        load_model("pythae:someone/conv-vae")
    assert load_model("pythae:someone/conv-vae", allow_pickle=True).encode(x)[0].shape == (2, 4)
    with pytest.raises(VaelensError, match="cannot find it in the local cache"):
        load_model("pythae:someone/nothing-here")


def test_diffusers_folder_pipeline_subfolder_and_bin_refusal(tmp_path):
    kl = tiny_kl((16, 16))
    kl.save_pretrained(tmp_path / "pipe" / "vae")
    vae = load_model(f"diffusers:{tmp_path / 'pipe'}")
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(vae.encode(x)[0], from_diffusers(kl).encode(x)[0])
    kl.save_pretrained(tmp_path / "bin", safe_serialization=False)
    with pytest.raises(VaelensError, match="--allow-pickle"):
        load_model(f"diffusers:{tmp_path / 'bin'}")
    with pytest.raises(VaelensError, match="no config.json"):
        load_model(f"diffusers:{tmp_path}")


def _photos(folder, n=4, size=20):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.mark.slow
def test_cli_audit_and_attack_on_a_diffusers_folder(run_cli, tmp_path):
    tiny_kl((16, 16, 16)).save_pretrained(tmp_path / "sd")
    photos = _photos(tmp_path / "photos", n=12)
    spec = f"diffusers:{tmp_path / 'sd'}"
    code, out, err = run_cli(
        "audit", "--model", spec, "--dataset", f"folder:{photos}", "--image-size", "16", "--method", "lanczos",
        "--iters", "6", "--n", "2", "--split", "train", "--kind", "mean,stochastic", "--probe-n", "1",
        "--out", tmp_path / "audit", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "audit" / "scores.csv").is_file() and (tmp_path / "audit" / "eigen_directions.png").is_file()
    rows = (tmp_path / "audit" / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2
    code, out, err = run_cli(
        "attack", "--model", spec, "--dataset", f"folder:{photos}", "--image-size", "16", "--method", "pgd",
        "--objective", "latent", "--eps", "0.5", "--steps", "3", "--n", "2", "--out", tmp_path / "attack", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "attack" / "damage.csv").is_file()
    code, out, err = run_cli(
        "audit", "--model", spec, "--dataset", f"folder:{photos}", "--image-size", "10", "--out", tmp_path / "c"
    )
    assert code == 2 and "divisible by 4" in err and "Traceback" not in err


def test_cli_on_a_pythae_folder_and_pickle_refusal(run_cli, tmp_path):
    tiny_pythae("VAE").save(str(tmp_path / "vae"))
    code, out, err = run_cli(
        "audit", "--model", f"pythae:{tmp_path / 'vae'}", "--n", "8", "--kind", "stochastic,fisher",
        "--out", tmp_path / "audit", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "mnist-5k" in out  # the offline set whose shape the model takes
    tiny_pythae("VAE", conv=True).save(str(tmp_path / "conv"))
    code, out, err = run_cli("attack", "--model", f"pythae:{tmp_path / 'conv'}", "--n", "4", "--out", tmp_path / "a")
    assert code == 2 and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli("audit", "--out", tmp_path / "b")
    assert code == 2 and "exactly one" in err


def test_cli_python_factory(run_cli, tmp_path):
    (tmp_path / "factory.py").write_text(
        "import torch\nfrom monai.networks.nets import AutoencoderKL\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8), latent_channels=2,"
        " num_res_blocks=1, attention_levels=(False, False), norm_num_groups=4)\n"
    )
    code, out, err = run_cli(
        "audit", "--model", f"python:{tmp_path / 'factory.py'}:make", "--dataset", "digits", "--n", "4",
        "--kind", "stochastic", "--probe-n", "0", "--out", tmp_path / "audit", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("audit", "--model", f"python:{tmp_path / 'factory.py'}:nope", "--dataset", "digits")
    assert code == 2 and "no function 'nope'" in err


def test_load_model_keeps_runs_working(digits_run):
    model = load_model(str(digits_run))
    x = torch.rand(2, 1, 8, 8)
    assert model.input_shape == (1, 8, 8)
    torch.testing.assert_close(model.encode(x)[0], vaelens.load(digits_run).encode(x)[0], rtol=0, atol=0)


class _Counting(torch.nn.Module):
    """A protocol VAE that records how many samples each encode call receives."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.sizes = inner, []

    def encode(self, x):
        self.sizes.append(len(x))
        return self.inner.encode(x)

    def decode(self, z):
        return self.inner.decode(z)


def test_lanczos_audit_holds_one_chunk_not_the_batch():
    """The Lanczos path never linearises the whole batch: memory follows --chunk-size."""
    from vaelens.evaluation import AuditConfig, audit

    vae = _Counting(from_diffusers(tiny_kl((16, 16))))
    x = torch.rand(6, 3, 8, 8)
    config = AuditConfig(kinds=("mean",), batch_size=6, method="lanczos", iters=4, n_show=0, probe_n=0)
    result = audit(vae, x, config=config, progress=False)
    assert max(vae.sizes) == 1 and result.methods == {"mean": "lanczos"}


@pytest.mark.slow
def test_auto_chooses_one_method_per_kind_for_the_whole_audit():
    """A short last batch fits the budget where full batches did not; it must not switch to exact."""
    from vaelens.evaluation import AuditConfig, audit

    vae = from_diffusers(tiny_kl((16, 16)).double())
    x = torch.rand(4, 3, 8, 8)
    one, three = (pullback_metric(vae, x[:b], "mean").exact_bytes() for b in (1, 3))
    budget = (one + three) / 2 / 2**30
    base = dict(kinds=("mean",), batch_size=3, iters=16, n_show=0, probe_n=0)
    vaelens.geometry._metric._noted.clear()
    with pytest.warns(LanczosNotice):
        auto = audit(vae, x, config=AuditConfig(**base, method="auto", memory_budget_gb=budget), progress=False)
    lanczos = audit(vae, x, config=AuditConfig(**base, method="lanczos"), progress=False)
    assert auto.methods == {"mean": "lanczos"}
    torch.testing.assert_close(auto.scores["mean"].trace, lanczos.scores["mean"].trace)


def test_from_pythae_keeps_every_submodule_mode():
    model = tiny_pythae("VAE")
    model.train()
    model.encoder.eval()  # a mixed state must survive adapting and every call
    before = snapshot(model)
    vae = from_pythae(model)
    pullback_metric(vae, torch.rand(2, 1, 28, 28), "stochastic").eigenvalues()
    assert_unchanged(model, before)


def test_wrap_without_a_module_asks_for_one_and_subclasses_are_adapted():
    m = torch.nn.Linear(4, 4)
    with pytest.raises(VaelensError, match="pass module="):
        wrap(lambda x: (m(x), m(x)), lambda z: z)

    class BrainVAE(monai_nets.AutoencoderKL):  # a user's subclass, as a python: factory returns
        pass

    torch.manual_seed(0)
    net = BrainVAE(
        spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8), latent_channels=2, num_res_blocks=1,
        attention_levels=(False, False), norm_num_groups=4,
    )  # fmt: skip
    vae = adapt(net)
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(vae.encode(x)[1], 2 * net.encode(x)[1].log().flatten(1))


@pytest.mark.slow
def test_cli_compare_a_run_with_a_third_party_model(run_cli, mnist_run, tmp_path):
    tiny_pythae("VAE").save(str(tmp_path / "vae"))
    code, out, err = run_cli(
        "compare", mnist_run, "--model", f"pythae:{tmp_path / 'vae'}", "--n", "16", "--steps", "2",
        "--out", tmp_path / "cmp", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    rows = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith("pythae:vae,")
    tiny_pythae("AE").save(str(tmp_path / "ae"))
    code, out, err = run_cli("compare", "--model", f"pythae:{tmp_path / 'ae'}", "--out", tmp_path / "cmp2")
    assert code == 2 and "deterministic encoder" in err
