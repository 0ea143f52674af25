import pytest
import torch

import vaelens
from vaelens.models import MLPVAE, ConvVAE, ModelConfig, build_model


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (64,), (1, 8, 8)])
def test_mlp_shapes(shape):
    model = MLPVAE(input_shape=shape, latent_dim=5, hidden=(32, 16))
    x = torch.rand(4, *shape)
    post = model.encode(x)
    assert isinstance(post, vaelens.Posterior)
    assert post.mu.shape == post.logvar.shape == (4, 5)
    recon = model.decode(post.mu)
    assert recon.shape == (4, *shape)
    assert recon.min() >= 0 and recon.max() <= 1
    assert model(x).shape == x.shape


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 8, 8), (3, 30, 22)])
def test_conv_shapes(shape):
    model = ConvVAE(input_shape=shape, latent_dim=7, channels=(4, 8, 8) if shape[1] > 8 else (4, 8))
    x = torch.rand(2, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 7)
    assert model.decode(mu).shape == (2, *shape)


def test_default_mlp_is_the_papers_architecture():
    model = MLPVAE(input_shape=(1, 28, 28), latent_dim=16)
    widths = [m.out_features for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256]
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in model.modules())


def test_build_model_follows_config():
    cfg = ModelConfig("conv", (1, 28, 28), latent_dim=4, channels=(8, 16), likelihood="gaussian")
    model = build_model(cfg)
    assert isinstance(model, ConvVAE) and model.config == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(architecture="transformer"), "unknown model architecture"),
        (dict(likelihood="poisson"), "unknown likelihood"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(architecture="conv", input_shape=(64,)), "conv model needs an image"),
        (dict(architecture="conv", input_shape=(1, 8, 8), channels=(4, 4, 4, 4)), "fewer channels"),
    ],
)
def test_bad_model_config(kwargs, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        ModelConfig(**kwargs)
