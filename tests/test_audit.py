import csv
import json

import pytest
import torch

import vaelens
from vaelens.data import load_dataset, take
from vaelens.evaluation import AuditConfig, audit, eigen_probe, write_audit
from vaelens.geometry import KINDS

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits_x():
    return take(load_dataset("digits", "test"), 40)


def test_probe_matches_direct_computation(digits_run, digits_x):
    model = vaelens.load(digits_run)
    x = digits_x[0][:3]
    probe = eigen_probe(model, x, "stochastic", directions=2, steps=torch.tensor([0.5, 2.0]))
    assert probe.mse.shape == (3, 2, 2) and probe.random_mse.shape == (3, 2)
    spec = vaelens.pullback_metric(model, x, "stochastic").eigen(2)
    x_t = x + 2.0 * spec.values[:, 1].view(-1, 1, 1, 1) * spec.vectors[:, 1]
    with torch.no_grad():
        direct = (model.decode(model.encode(x_t)[0]) - x).square().flatten(1).mean(1)
    torch.testing.assert_close(probe.mse[:, 1, 1], direct)


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["unit", "lambda"])
def test_top_direction_degrades_more_than_random(mnist_run, scale):
    """docs/method.md section 5, on a model trained on real digits: v1 hurts most, random barely."""
    model = vaelens.load(mnist_run)
    x = take(load_dataset("mnist-5k", "test"), 64)[0]
    probe = eigen_probe(model, x, "stochastic", directions=2, scale=scale)
    v1, rand = probe.mse[:, 0].mean(0), probe.random_mse.mean(0)
    assert (v1 >= rand - 1e-4).all()
    assert v1[-1] > 1.2 * rand[-1]


def test_audit_writes_every_output(digits_run, digits_x, tmp_path):
    model = vaelens.load(digits_run)
    x, labels = digits_x
    config = AuditConfig(kinds=("stochastic", "fisher"), batch_size=16, probe_n=10, n_show=3)
    result = audit(model, x, labels, config, progress=False)
    assert set(result.scores) == {"stochastic", "fisher"}
    assert result.scores["fisher"].spectral_radius.shape == (40,)
    # batching does not change the scores
    whole = audit(model, x, labels, AuditConfig(batch_size=64, probe_n=0), progress=False)
    torch.testing.assert_close(whole.scores["stochastic"].spectral_radius, result.scores["stochastic"].spectral_radius)
    paths = write_audit(result, tmp_path / "audit")
    for name in ("histograms", "eigen_directions", "eigen_directions_fisher", "probe"):
        assert paths[name].read_bytes().startswith(PNG), name
    with open(paths["scores"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and {r["kind"] for r in rows} == {"stochastic", "fisher"}
    assert rows[0]["label"] == str(int(labels[0]))
    summary = json.loads(paths["summary"].read_text())["summary"]
    assert set(summary["stochastic"]["spectral_radius"]) == {
        "mean",
        "median",
        "std",
        "q05",
        "q25",
        "q75",
        "q95",
    }
    with open(paths["probe_csv"]) as f:
        probe_rows = list(csv.DictReader(f))
    assert {r["direction"] for r in probe_rows} == {"v1", "v2", "v3", "v4", "v5", "random"}
    assert not list((tmp_path / "audit").glob("*.tmp"))


@pytest.mark.parametrize("kind", KINDS)
def test_audit_every_kind(digits_run, digits_x, kind):
    result = audit(
        vaelens.load(digits_run),
        digits_x[0][:5],
        config=AuditConfig(kinds=(kind,), probe_n=2),
        progress=False,
    )
    for name, value in result.scores[kind].as_dict().items():
        assert torch.isfinite(value).all(), name


def test_cli_audit(run_cli, digits_run, tmp_path):
    out = tmp_path / "a"
    code, stdout, stderr = run_cli(
        "audit",
        digits_run,
        "--n",
        "30",
        "--kind",
        "stochastic,fisher",
        "--batch-size",
        "8",
        "--out",
        out,
        "--quiet",
    )
    assert code == 0, stderr
    assert "spectral_radius" in stdout and "fisher" in stdout
    assert {p.name for p in out.iterdir()} >= {
        "scores.csv",
        "summary.json",
        "histograms.png",
        "eigen_directions.png",
        "probe.csv",
        "probe.png",
    }
    meta = json.loads((out / "summary.json").read_text())
    assert meta["dataset"] == "digits" and meta["n"] == 30


@pytest.mark.parametrize(
    "args, match",
    [
        (["--kind", "riemann"], "unknown metric kind"),
        (["--n", "0"], "(inputs to evaluate, --n) must be >= 1"),
        (["--normalize", "l2"], "normalize must be"),
        (["--dataset", "imagenet"], "unknown data set"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_cli_audit_errors(run_cli, digits_run, tmp_path, args, match):
    code, stdout, stderr = run_cli("audit", digits_run, "--out", tmp_path / "a", "--quiet", *args)
    assert code == 2 and match in stderr and "Traceback" not in stderr + stdout


def test_cli_audit_missing_run(run_cli, tmp_path):
    code, _, stderr = run_cli("audit", tmp_path / "nope")
    assert code == 2 and "does not exist" in stderr


def test_audit_rejects_bad_inputs(digits_run):
    model = vaelens.load(digits_run)
    with pytest.raises(vaelens.VaelensError, match=r"\[0, 1\]"):
        audit(model, torch.rand(4, 1, 8, 8) * 5, progress=False)
    with pytest.raises(vaelens.VaelensError, match="no inputs"):
        audit(model, torch.rand(0, 1, 8, 8), progress=False)


@pytest.mark.parametrize("batch_size", [16, 4])  # probe inside the first batch, and spanning batches
def test_audit_probe_equals_direct_probe(digits_run, digits_x, batch_size):
    model = vaelens.load(digits_run)
    x = digits_x[0][:12]
    config = AuditConfig(batch_size=batch_size, probe_n=8, probe_directions=3, n_show=0)
    probe = audit(model, x, config=config, progress=False).probe
    direct = eigen_probe(model, x[:8], "stochastic", directions=3)
    torch.testing.assert_close(probe.mse, direct.mse, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(probe.random_mse, direct.random_mse)


def test_audit_scores_equal_direct_robustness_scores(digits_run, digits_x):
    model = vaelens.load(digits_run)
    x = digits_x[0][:20]
    result = audit(
        model, x, config=AuditConfig(kinds=("stochastic", "output"), batch_size=20, probe_n=0), progress=False
    )
    for kind in ("stochastic", "output"):
        direct = vaelens.robustness_scores(vaelens.pullback_metric(model, x, kind).eigenvalues())
        for name, value in result.scores[kind].as_dict().items():
            torch.testing.assert_close(value, getattr(direct, name), msg=f"{kind} {name}")


def test_audit_builds_eigenvectors_only_for_what_it_draws(digits_run, digits_x, monkeypatch):
    from vaelens.geometry import PullbackMetric

    built = []
    original = PullbackMetric.eigen

    def counting(self, r=None, *args):
        spec = original(self, r, *args)
        built.append(tuple(spec.vectors.shape[:2]))
        return spec

    monkeypatch.setattr(PullbackMetric, "eigen", counting)
    model = vaelens.load(digits_run)
    audit(
        model, digits_x[0], config=AuditConfig(batch_size=32, n_show=4, probe_n=6, probe_directions=3), progress=False
    )
    assert built == [(6, 5)]  # 6 inputs (probed; 4 of them drawn), 5 directions (drawn), not (32, 6)


def test_probe_refuses_a_spectrum_of_another_kind(digits_run, digits_x):
    model = vaelens.load(digits_run)
    x = digits_x[0][:3]
    spectrum = vaelens.pullback_metric(model, x, "fisher").eigen(2)
    with pytest.raises(vaelens.VaelensError, match="spectrum given is of the fisher metric but kind='stochastic'"):
        eigen_probe(model, x, "stochastic", directions=2, spectrum=spectrum)
    probe = eigen_probe(model, x, "fisher", directions=2, spectrum=spectrum)
    assert probe.kind == "fisher"
