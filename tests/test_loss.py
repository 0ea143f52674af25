import math

import pytest
import torch

from vaelens import Posterior
from vaelens.training import beta_vae_loss, kl_to_prior


class _Fixed(torch.nn.Module):
    """A hand-made VAE on 2 pixels with a 1-d latent: mu = x0 - x1, logvar = log 0.25,
    decoder logits = (z, -z)."""

    input_shape = (2,)

    def encode(self, x):
        mu = (x[:, 0] - x[:, 1]).unsqueeze(1)
        return Posterior(mu, torch.full_like(mu, math.log(0.25)))

    def decode_logits(self, z):
        return torch.cat([z, -z], 1)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))


def test_kl_to_prior_closed_form():
    mu = torch.tensor([[0.0, 0.0], [1.0, -2.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])
    # 0.5 * sum(var + mu^2 - 1 - log var)
    expected = torch.tensor([0.0, 0.5 * ((4 + 1 - 1 - math.log(4)) + (1 + 4 - 1 - 0))])
    torch.testing.assert_close(kl_to_prior(mu, logvar), expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_against_hand_computation(likelihood):
    x = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    noise = torch.tensor([[2.0], [-1.0]])
    beta = 0.5
    terms = beta_vae_loss(_Fixed(), x, beta, noise, likelihood)

    def sig(v):
        return 1 / (1 + math.exp(-v))

    recon, kl = [], []
    for (a, b), n in zip(x.tolist(), noise.flatten().tolist(), strict=True):
        mu, sd = a - b, 0.5
        z = mu + sd * n
        p = [sig(z), sig(-z)]
        if likelihood == "bernoulli":
            recon.append(-sum(t * math.log(q) + (1 - t) * math.log(1 - q) for t, q in zip((a, b), p, strict=True)))
        else:
            recon.append(sum((t - q) ** 2 for t, q in zip((a, b), p, strict=True)))
        kl.append(0.5 * (sd**2 + mu**2 - 1 - math.log(sd**2)))
    r, k = sum(recon) / 2, sum(kl) / 2
    assert terms.recon.item() == pytest.approx(r, rel=1e-5)
    assert terms.kl.item() == pytest.approx(k, rel=1e-5)
    assert terms.loss.item() == pytest.approx(r + beta * k, rel=1e-5)
