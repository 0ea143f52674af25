"""Pullback metrics against brute force (torch.autograd.functional.jacobian), per docs/method.md section 3."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import vaelens
from vaelens import Posterior
from vaelens.geometry import KINDS, VmapFallbackWarning, pullback_metric
from vaelens.models import MLPVAE, ConvVAE


def _mlp():
    torch.manual_seed(0)
    return MLPVAE(input_shape=(1, 6, 6), latent_dim=3, hidden=(20, 12)).double()


def _conv():
    torch.manual_seed(1)
    return ConvVAE(input_shape=(1, 8, 8), latent_dim=3, channels=(4, 6)).double()


class HandWritten(torch.nn.Module):
    """A protocol VAE from elsewhere: flat inputs, a plain tuple, no input_shape attribute."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.enc = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
        self.dec = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))

    def encode(self, x):
        h = self.enc(x)
        return h[:, :2], h[:, 2:]

    def decode(self, z):
        return torch.sigmoid(self.dec(z))


MODELS = {
    "mlp": (_mlp, (1, 6, 6)),
    "conv": (_conv, (1, 8, 8)),
    "hand": (lambda: HandWritten().double(), (10,)),
}


def brute_force_metric(model, x, kind):
    """G(x) for one input x (*shape), straight from the formulas of docs/method.md section 3."""
    with torch.no_grad():
        return _brute_force_metric(model, x, kind)


def _brute_force_metric(model, x, kind):

    def mu_of(xi):
        return model.encode(xi.unsqueeze(0))[0][0]

    def sigma_of(xi):
        return (0.5 * model.encode(xi.unsqueeze(0))[1][0]).exp()

    jm = jacobian(mu_of, x).reshape(-1, x.numel())  # (k, d)
    js = jacobian(sigma_of, x).reshape(-1, x.numel())
    sigma = sigma_of(x)
    if kind == "mean":
        return jm.T @ jm
    if kind == "stochastic":
        return jm.T @ jm + js.T @ js
    if kind == "fisher":
        s_inv = torch.diag(1 / sigma**2)
        return jm.T @ s_inv @ jm + 2 * js.T @ s_inv @ js
    jg = jacobian(lambda z: model.decode(z.unsqueeze(0)).flatten(), mu_of(x))  # (d, k)
    a = jg.T @ jg
    g = jm.T @ a @ jm
    if kind == "output-stochastic":
        g = g + js.T @ torch.diag(torch.diagonal(a)) @ js
    return g


@pytest.fixture(params=list(MODELS))
def model_and_x(request):
    make, shape = MODELS[request.param]
    model = make().eval()
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return model, x


@pytest.mark.parametrize("kind", KINDS)
def test_metric_matches_brute_force(model_and_x, kind):
    model, x = model_and_x
    metric = pullback_metric(model, x, kind)
    dense = metric.dense()
    spectrum = metric.eigen()
    d = x[0].numel()
    assert spectrum.vectors.shape == (4, metric.rank_bound, *x.shape[1:])
    for i in range(len(x)):
        g = brute_force_metric(model, x[i], kind)
        torch.testing.assert_close(dense[i], g, rtol=1e-8, atol=1e-10)
        expected = torch.linalg.eigvalsh(g).flip(0)[: metric.rank_bound].clamp_min(0)
        torch.testing.assert_close(spectrum.values[i], expected, rtol=1e-7, atol=1e-9 * expected[0].item())
        torch.testing.assert_close(metric.eigenvalues()[i], spectrum.values[i])
        vecs = spectrum.vectors[i].reshape(-1, d)
        torch.testing.assert_close(vecs.norm(dim=1), torch.ones(len(vecs), dtype=x.dtype))
        for lam, v in zip(spectrum.values[i], vecs, strict=True):
            if lam > 1e-8 * spectrum.values[i, 0]:  # vectors of zero eigenvalues are arbitrary
                torch.testing.assert_close(g @ v, lam * v, atol=1e-8 * spectrum.values[i, 0].item(), rtol=0)
        # matrix-free product agrees with the dense matrix
        v = torch.randn(x[i].shape, dtype=x.dtype, generator=torch.Generator().manual_seed(i))
        gv = metric.matvec(v.expand_as(x).contiguous())[i].flatten()
        torch.testing.assert_close(gv, g @ v.flatten(), rtol=1e-8, atol=1e-10)


def test_values_descending_and_nonnegative(model_and_x):
    model, x = model_and_x
    values = pullback_metric(model, x, "stochastic").eigenvalues()
    assert (values >= 0).all() and (values[:, :-1] >= values[:, 1:]).all()


def _kl(mu1, lv1, mu2, lv2):
    return 0.5 * ((lv2 - lv1) + (lv1.exp() + (mu1 - mu2) ** 2) / lv2.exp() - 1).sum(-1)


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_fisher_is_second_order_model_of_kl(name):
    make, shape = MODELS[name]
    model = make().eval()
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    spec = pullback_metric(model, x, "fisher").eigen(1)
    lam, v1 = spec.values[:, 0], spec.vectors[:, 0]
    mu, lv = model.encode(x)
    errors = []
    for t in (1e-1, 1e-2, 1e-3):
        mu_t, lv_t = model.encode(x + t * v1)
        ratio = _kl(mu_t, lv_t, mu, lv) / (t**2 * lam / 2)
        errors.append((ratio - 1).abs().max().item())
    assert errors[-1] < 1e-2
    assert errors[2] < errors[1] < errors[0] or errors[0] < 1e-3


def test_lanczos_matches_exact_spectrum():
    torch.manual_seed(4)
    model = ConvVAE(input_shape=(3, 16, 16), latent_dim=8, channels=(6, 8)).double().eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    metric = pullback_metric(model, x, "stochastic")
    exact = metric.eigen(3)
    approx = metric.lanczos(r=3, iters=40)
    torch.testing.assert_close(approx.values, exact.values, rtol=1e-6, atol=0)
    overlap = (approx.vectors.flatten(2) * exact.vectors.flatten(2)).sum(-1).abs()
    assert (overlap > 0.999).all()


@pytest.mark.parametrize("kind", ["fisher", "output-stochastic"])
def test_lanczos_other_kinds_and_rank_deficiency(kind):
    model = _mlp().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    metric = pullback_metric(model, x, kind)
    # rank <= 6 < 36 = d: Lanczos must survive the Krylov space running out
    approx = metric.lanczos(r=2, iters=20)
    torch.testing.assert_close(approx.values, metric.eigenvalues(2), rtol=1e-6, atol=0)


def test_chunked_equals_unchunked(model_and_x):
    model, x = model_and_x
    for kind in ("stochastic", "output"):
        whole = pullback_metric(model, x, kind).eigen()
        chunked = pullback_metric(model, x, kind, chunk_size=3).eigen()
        torch.testing.assert_close(chunked.values, whole.values)
        torch.testing.assert_close(chunked.vectors, whole.vectors)


def test_float32_model_stays_float32():
    model = MLPVAE(input_shape=(1, 6, 6), latent_dim=3, hidden=(8,)).eval()
    spec = pullback_metric(model, torch.rand(2, 1, 6, 6, dtype=torch.float64), "fisher").eigen(2)
    assert spec.values.dtype == torch.float32 and spec.vectors.dtype == torch.float32


def test_mode_restored_and_no_parameter_gradients():
    model = _mlp()
    model.train()
    model.encoder.eval()  # a mixed state must come back exactly
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    metric = pullback_metric(model, x, "output-stochastic")
    metric.eigen()
    metric.lanczos(1, 5)
    assert model.training and not model.encoder.training and model.decoder.training
    assert all(p.grad is None for p in model.parameters())


class NoVmap(HandWritten):
    """Data-dependent Python control flow: vmap cannot trace it, autograd can."""

    def encode(self, x):
        h = self.enc(x)
        if h.detach().sum().item() > 1e9:  # never true, but vmap refuses to evaluate it
            h = h * 0
        return Posterior(h[:, :2], h[:, 2:])


def test_vmap_fallback_warns_and_is_correct():
    model = NoVmap().double().eval()
    x = torch.rand(3, 10, dtype=torch.float64)
    with pytest.warns(VmapFallbackWarning):
        dense = pullback_metric(model, x, "stochastic", chunk_size=2).dense()
    for i in range(3):
        torch.testing.assert_close(dense[i], brute_force_metric(model, x[i], "stochastic"))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: pullback_metric(m, torch.rand(2, 1, 5, 5)), r"per-sample shape \(1, 5, 5\)"),
        (lambda m: pullback_metric(m, torch.full((2, 1, 6, 6), float("nan"))), "NaN"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6) + 1), r"\[0, 1\]"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6), kind="riemann"), "unknown metric kind"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6), "mean").eigen(4), "rank at most 3"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6)).eigenvalues(0), "1 <= r"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6), chunk_size=0), "chunk_size"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6)).matvec(torch.rand(2, 36)), "v must have shape"),
        (lambda m: pullback_metric(m, torch.rand(2, 1, 6, 6)).lanczos(5, iters=3), "raise iters"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        call(MLPVAE(input_shape=(1, 6, 6), latent_dim=3, hidden=(8,)))


def test_wrong_shape_for_model_without_input_shape():
    with pytest.raises(vaelens.VaelensError, match="failed on input of shape"):
        pullback_metric(HandWritten(), torch.rand(2, 7)).eigenvalues()


def test_not_a_vae():
    with pytest.raises(vaelens.VaelensError, match="is not a VAE"):
        pullback_metric(torch.nn.Linear(4, 2), torch.rand(2, 4)).eigenvalues()


def test_spectral_radius_is_top_sensitivity():
    """rho(G) bounds the quadratic form: v^T G v <= lambda_1 for unit v."""
    model = _mlp().eval()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    metric = pullback_metric(model, x, "stochastic")
    lam1 = metric.eigenvalues(1)[:, 0]
    v = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    quad = (metric.matvec(v) * v).flatten(1).sum(1)
    assert (quad <= lam1 * (1 + 1e-10)).all()
    assert math.isfinite(lam1.sum().item())


class _TanhNoForwardAD(torch.autograd.Function):
    """tanh with a backward but no jvp: forward-mode AD is not implemented for it, as for torch's
    fused attention on the CPU."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class _NoForwardADVAE(torch.nn.Module):
    input_shape = (1, 5, 5)

    def __init__(self, forward_ad: bool):
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.Linear(25, 6).double()
        self.dec = torch.nn.Linear(3, 25).double()
        self.act = torch.tanh if forward_ad else _TanhNoForwardAD.apply

    def encode(self, x):
        h = self.act(self.enc(x.flatten(1)))
        return h[:, :3], h[:, 3:]

    def decode(self, z):
        return torch.sigmoid(self.act(self.dec(z))).view(-1, 1, 5, 5)


@pytest.mark.parametrize("kind", ["stochastic", "output"])
def test_lanczos_without_forward_mode_ad_matches_exact(kind):
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    with pytest.raises((NotImplementedError, RuntimeError)):  # the model really lacks forward-mode AD
        torch.func.jvp(_NoForwardADVAE(False).encode, (x,), (x,))
    for forward_ad in (True, False):
        model = _NoForwardADVAE(forward_ad)
        metric = pullback_metric(model, x, kind)
        exact = pullback_metric(model, x, kind).eigen(2).values
        approx = metric.lanczos(2, iters=25).values
        torch.testing.assert_close(approx, exact, rtol=1e-8, atol=1e-10)


def test_each_kind_is_one_object_and_the_metric_never_branches_on_a_name():
    import inspect

    from vaelens.geometry import KINDS, _metric, metric_kind

    assert [metric_kind(k).name for k in KINDS] == list(KINDS)
    assert {k for k in KINDS if not metric_kind(k).needs_variance} == {"mean", "output"}
    assert {k: metric_kind(k).blocks for k in KINDS} == {"mean": 1, "stochastic": 2, "fisher": 2, "output": 1,
                                                         "output-stochastic": 2}  # fmt: skip
    with pytest.raises(vaelens.VaelensError, match="unknown metric kind .riemann.; choose one of mean, stochastic"):
        metric_kind("riemann")
    source = inspect.getsource(_metric.PullbackMetric)
    assert "kind ==" not in source and "kind in (" not in source and "kind not in" not in source
