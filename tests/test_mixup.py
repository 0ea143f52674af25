import json
import math
import shutil

import pytest
import torch

import vaelens
from vaelens import Posterior
from vaelens.experiments import DatasetMismatchWarning, compare_runs, write_comparison
from vaelens.training import MixupConfig, mixup_terms, train
from vaelens.training._mixup import draw_mixing

from conftest import tiny_config


class Spy(torch.nn.Module):
    """A 2-pixel, 1-latent hand-made VAE that records what it is given."""

    input_shape = (2,)

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
        self.v = torch.nn.Parameter(torch.tensor([0.5, 2.0]))
        self.seen_x, self.seen_z = [], []

    def encode(self, x):
        self.seen_x.append(x.detach().clone())
        mu = (x * self.w).sum(1, keepdim=True)
        return Posterior(mu, torch.full_like(mu, math.log(0.25)))

    def decode(self, z):
        self.seen_z.append(z.detach().clone())
        return torch.sigmoid(z * self.v)


def test_mixup_terms_by_hand():
    model = Spy()
    x = torch.tensor([[1.0, 0.0], [0.2, 0.6], [0.5, 0.5]])
    z = torch.tensor([[0.3], [-1.0], [2.0]])
    alpha, perm = torch.tensor(0.25), torch.tensor([2, 0, 1])
    terms = mixup_terms(model, x, z, alpha, perm)
    kl, recon, latent = [], [], []
    for i in range(3):
        xm = [0.25 * x[i, j].item() + 0.75 * x[perm[i], j].item() for j in range(2)]
        zm = 0.25 * z[i, 0].item() + 0.75 * z[perm[i], 0].item()
        mu = xm[0] - xm[1]
        kl.append(0.5 * (0.25 + mu**2 - 1 - math.log(0.25)))
        g = [1 / (1 + math.exp(-zm * 0.5)), 1 / (1 + math.exp(-zm * 2.0))]
        recon.append(sum((a - b) ** 2 for a, b in zip(xm, g, strict=True)))
        latent.append((zm - mu) ** 2)
    assert terms.kl.item() == pytest.approx(sum(kl) / 3, rel=1e-6)
    assert terms.recon.item() == pytest.approx(sum(recon) / 3, rel=1e-6)
    assert terms.latent.item() == pytest.approx(sum(latent) / 3, rel=1e-6)


def test_sample_latent_target_by_hand_and_in_expectation():
    """latent_target="sample": ||z_mix - (mu_mix + sigma_mix n)||^2, whose mean over n is the
    mean-target term plus sum_i sigma_i^2 (docs/method.md section 6)."""
    model = Spy()
    x = torch.tensor([[1.0, 0.0], [0.2, 0.6], [0.5, 0.5]])
    z = torch.tensor([[0.3], [-1.0], [2.0]])
    alpha, perm = torch.tensor(0.25), torch.tensor([2, 0, 1])
    mean = mixup_terms(model, x, z, alpha, perm)
    zero = mixup_terms(model, x, z, alpha, perm, torch.zeros(3, 1))
    assert zero.latent.item() == pytest.approx(mean.latent.item(), rel=1e-7)
    noise = torch.tensor([[1.0], [-2.0], [0.5]])
    sampled = mixup_terms(model, x, z, alpha, perm, noise)
    x_mix, z_mix = 0.25 * x + 0.75 * x[perm], 0.25 * z + 0.75 * z[perm]
    mu = x_mix[:, :1] - x_mix[:, 1:]
    assert sampled.latent.item() == pytest.approx((z_mix - mu - 0.5 * noise).square().mean().item(), rel=1e-6)
    assert (sampled.kl, sampled.recon) == (mean.kl, mean.recon)
    many = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
    draws = [mixup_terms(model, x, z, alpha, perm, many[i : i + 3]).latent for i in range(0, 6000, 3)]
    assert torch.stack(draws).mean().item() == pytest.approx(mean.latent.item() + 0.25, rel=0.05)


def test_latent_target_option_is_checked_and_trains(tmp_path):
    with pytest.raises(vaelens.VaelensError, match="latent_target"):
        MixupConfig(latent_target="median")
    a = train(tiny_config(defence=MixupConfig(latent_target="sample")), tmp_path / "a", progress=False).model
    b = train(tiny_config(defence=MixupConfig(latent_target="sample")), tmp_path / "b", progress=False).model
    c = train(tiny_config(defence=MixupConfig()), tmp_path / "c", progress=False).model
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("per_sample", [False, True])
def test_same_permutation_and_alpha_for_x_and_z(per_sample):
    model = Spy()
    x, z = torch.rand(6, 2), torch.randn(6, 1)
    alpha, perm = draw_mixing(MixupConfig(per_sample=per_sample), 6, torch.Generator().manual_seed(0), "cpu")
    assert alpha.shape == ((6,) if per_sample else ())
    mixup_terms(model, x, z, alpha, perm)
    a = alpha.view(-1, 1) if per_sample else alpha
    torch.testing.assert_close(model.seen_x[-1], a * x + (1 - a) * x[perm])
    torch.testing.assert_close(model.seen_z[-1], a * z + (1 - a) * z[perm])
    assert sorted(perm.tolist()) == list(range(6))


def test_gradients_reach_encoder_and_decoder():
    model = vaelens.models.MLPVAE(input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    x = torch.rand(5, 1, 4, 4)
    z = torch.randn(5, 2)
    terms = mixup_terms(model, x, z, torch.tensor(0.3), torch.randperm(5))
    sum(terms).backward()
    for name, p in model.named_parameters():
        if name.startswith("to_logvar"):
            continue  # the mixup terms use mu(x_mix) and KL; logvar enters only through the KL
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.to_logvar.weight.grad.abs().sum() > 0


def test_mixup_training_deterministic_and_logged(tmp_path):
    config = tiny_config(defence=MixupConfig(alpha=0.5, weight_latent=2.0))
    a = train(config, tmp_path / "a", progress=False)
    b = train(config, tmp_path / "b", progress=False)
    wa, wb = vaelens.load(a.run_dir).state_dict(), vaelens.load(b.run_dir).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    m = a.metrics[-1]
    assert m["mix_kl"] > 0 and m["mix_recon"] > 0 and m["mix_latent"] > 0
    assert m["loss"] == pytest.approx(
        m["recon"] + m["kl"] + m["mix_kl"] + m["mix_recon"] + 2 * m["mix_latent"], rel=1e-4
    )
    saved = json.loads((tmp_path / "a" / "config.json").read_text())["defence"]
    assert saved == {
        "name": "mixup", "alpha": 0.5, "per_sample": False, "weight_kl": 1.0, "weight_recon": 1.0, "weight_latent": 2.0,
        "latent_target": "mean",
    }  # fmt: skip
    plain = train(tiny_config(), tmp_path / "c", progress=False).metrics[-1]
    assert plain["mix_kl"] == plain["mix_recon"] == plain["mix_latent"] == 0


@pytest.mark.parametrize("kwargs, match", [({"alpha": 0}, "alpha must be > 0"), ({"weight_kl": -1}, "weights")])
def test_bad_mixup_config(kwargs, match):
    with pytest.raises(vaelens.VaelensError, match=match):
        MixupConfig(**kwargs)


def test_cli_mixup_flags(run_cli, tmp_path):
    out = tmp_path / "mx"
    args = ["train", "--dataset", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
    code, stdout, stderr = run_cli(*args, "--mixup", "--mixup-alpha", "0.4", "--mixup-per-sample", "--out", out)
    assert code == 0, stderr
    assert "mixup alpha" in stdout and "0.4" in stdout
    info = json.loads(run_cli("info", out, "--json")[1])
    assert info["config"]["defence"]["per_sample"] is True
    code, _, stderr = run_cli(*args, "--mixup", "--mixup-weights", "1,2", "--out", tmp_path / "x")
    assert code == 2 and "three numbers" in stderr
    code, _, stderr = run_cli(*args, "--mixup", "--mixup-alpha", "-1", "--out", tmp_path / "y")
    assert code == 2 and "alpha must be > 0" in stderr


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    for name, kw in (("b1", {}), ("b4", {"beta": 4.0}), ("mix", {"defence": MixupConfig()})):
        train(tiny_config(epochs=1, **kw), root / name, progress=False)
    return root


def test_compare_writes_every_output(three_runs, tmp_path):
    runs = [three_runs / n for n in ("b1", "b4", "mix")]
    comp = compare_runs(runs, n=40, eps=0.5, pgd_steps=3, progress=False)
    assert [r.name for r in comp.rows] == ["b1", "b4", "mix"]
    assert [r.mixup for r in comp.rows] == [False, False, True]
    assert any("mix (beta 1, mixup): median rho(G)" in s for s in comp.verdict)
    paths = write_comparison(comp, tmp_path / "cmp")
    for p in paths.values():
        assert p.is_file() and p.stat().st_size > 0
    rows = (tmp_path / "cmp" / "comparison.csv").read_text().splitlines()
    assert len(rows) == 4 and "pgd_kl" in rows[0] and "active_units" in rows[0]


def test_verdict_follows_the_numbers(three_runs):
    from vaelens.experiments._compare import verdict

    comp = compare_runs([three_runs / n for n in ("b1", "b4", "mix")], n=20, eps=0.5, pgd_steps=2, progress=False)
    b1, b4, mix = comp.rows
    mix.test_mse = (b1.test_mse + b4.test_mse) / 2
    mix.rho_median = 1e-9
    assert "below (more robust than)" in verdict([b1, b4, mix])[0]
    mix.rho_median = 1e9
    assert "above (less robust than)" in verdict([b1, b4, mix])[0]
    assert "nothing to place" in verdict([b1, b4])[0]
    assert "two runs without a defence" in verdict([b1, mix])[0]


def test_compare_warns_on_different_datasets(three_runs, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), color=i * 20).save(folder / f"{i}.png")
    config = tiny_config(dataset=f"folder:{folder}", image_size=8, image_channels=1, epochs=1)
    train(config, tmp_path / "folder_run", progress=False)
    with pytest.warns(DatasetMismatchWarning, match="different data sets"):
        compare_runs([three_runs / "b1", tmp_path / "folder_run"], n=8, pgd_steps=2, progress=False)


def test_compare_errors(run_cli, three_runs, tmp_path):
    code, _, stderr = run_cli("compare", three_runs / "b1", tmp_path / "missing", "--out", tmp_path / "o")
    assert code == 2 and "does not exist" in stderr
    code, stdout, stderr = run_cli(
        "compare", three_runs / "b1", three_runs / "b4", three_runs / "mix", "--n", "20", "--steps", "2",
        "--out", tmp_path / "o", "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert "robustness_reconstruction.png" in stdout and "mixup" in stdout
    assert (tmp_path / "o" / "verdict.txt").read_text().strip()


def test_compare_mismatched_shapes_is_an_error(three_runs, mnist_run, tmp_path):
    shutil.copytree(mnist_run, tmp_path / "m")
    with pytest.raises(vaelens.VaelensError, match="cannot be compared"), pytest.warns(DatasetMismatchWarning):
        compare_runs([three_runs / "b1", tmp_path / "m"], n=4, progress=False)


def test_compare_judges_an_adversarial_run_instead_of_drawing_the_curve_with_it(three_runs, tmp_path):
    from vaelens.training import AdversarialConfig

    adv = tmp_path / "adv"
    train(tiny_config(epochs=1, defence=AdversarialConfig(eps=0.5, steps=1)), adv, progress=False)
    comp = compare_runs([three_runs / "b1", three_runs / "b4", adv], n=20, eps=0.5, pgd_steps=2, progress=False)
    assert [r.defence for r in comp.rows] == ["none", "none", "adversarial"]
    assert any(s.startswith("adv (beta 1, adversarial): median rho(G)") for s in comp.verdict)
    assert not any("Against adv" in s for s in comp.verdict)  # never the undefended baseline of its beta


def test_compare_passes_allow_pickle_on_when_it_loads_a_run(three_runs, monkeypatch):
    from vaelens.experiments import _compare

    real, seen = _compare.load_model, []

    def spy(spec, device="cpu", allow_pickle=False, **kw):
        seen.append(allow_pickle)
        return real(spec, device, allow_pickle, **kw)

    monkeypatch.setattr(_compare, "load_model", spy)
    _compare.compare_runs([three_runs / "b1"], n=4, eps=0.5, pgd_steps=1, progress=False, allow_pickle=True)
    assert seen == [True]
