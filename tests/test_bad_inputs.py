"""Bad input, table-driven: every case is one line on stderr, exit status 2, no traceback (CLI),
or a ``VaelensError`` naming the problem (API). Nothing is computed first and lost."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import vaelens
from vaelens._tensors import sha256
from vaelens.training import STATE, model_file

from conftest import tiny_config


def _one_line(code: int, stdout: str, stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stdout + stderr
    return lines


TRAIN = ["train", "--dataset", "digits", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--quiet"]
SWEEP = ["sweep", "--dataset", "digits", "--epochs", "1", "--n", "4", "--latent-dim", "2", "--quiet"]

CLI_CASES = [
    (TRAIN + ["--epochs", "0"], "epochs must be >= 1"),
    (TRAIN + ["--batch-size", "0"], "batch_size must be >= 1"),
    (TRAIN + ["--beta", "-1"], "beta must be >= 0"),
    (TRAIN + ["--lr", "0"], "lr must be > 0"),
    (TRAIN + ["--warmup-epochs", "inf"], "warmup_epochs: input should be a finite number"),
    (TRAIN + ["--warmup-epochs", "nan"], "warmup_epochs: input should be a finite number"),
    (TRAIN + ["--beta", "nan"], "beta: input should be a finite number"),
    (TRAIN + ["--latent-dim", "0"], "latent_dim must be a positive integer"),
    (TRAIN + ["--model", "transformer"], "unknown model architecture"),
    (TRAIN + ["--likelihood", "poisson"], "unknown likelihood"),
    (TRAIN + ["--dataset", "nope"], "unknown data set"),
    (TRAIN + ["--hidden", "5,x"], "--hidden takes comma-separated integers"),
    (TRAIN + ["--device", "tpu"], "device must be cpu, cuda or mps"),
    (TRAIN + ["--mixup", "--mixup-alpha", "0"], "mixup alpha must be > 0"),
    (TRAIN + ["--mixup", "--mixup-weights", "1,2"], "--mixup-weights takes three numbers"),
    (TRAIN + ["--mixup", "--mixup-weights", "1,-1,1"], "mixup weights must be >= 0"),
    (["train", "--bogus"], "No such option"),
    (["audit", "{run}", "--kind", "riemann"], "unknown metric kind"),
    (["audit", "{run}", "--kind", "stochastic,stochastic"], "kinds lists 'stochastic' more than once"),
    (["audit", "{run}", "--n", "0"], "must be >= 1"),
    (["audit", "{run}", "--batch-size", "0"], "batch_size must be >= 1"),
    (["audit", "{run}", "--normalize", "foo"], "normalize must be one of"),
    (["audit", "{run}", "--probe-scale", "foo"], "probe_scale must be one of"),
    (["audit", "{run}", "--probe-n", "-1"], "probe_n"),
    (["audit", "{run}", "--split", "valid"], "split"),
    (["audit", "{run}", "--dataset", "nope"], "unknown data set"),
    (["audit", "{run}", "--chunk-size", "0"], "chunk_size"),
    (["audit", "{missing}"], "does not exist"),
    (["attack", "{run}", "--method", "fgsm"], "unknown attack method"),
    (["attack", "{run}", "--eps", "0"], "eps must be"),
    (["attack", "{run}", "--eps", "-1"], "eps must be"),
    (["attack", "{run}", "--eps", "nan"], "eps must be"),
    (["attack", "{run}", "--eps", "1,1"], "eps lists 1.0 more than once"),
    (["attack", "{run}", "--eps", "a"], "--eps takes"),
    (["attack", "{run}", "--norm", "l1"], "unknown norm"),
    (["attack", "{run}", "--objective", "mmd"], "unknown objective"),
    (["attack", "{run}", "--steps", "0"], "steps must be >= 1"),
    (["attack", "{run}", "--restarts", "0"], "restarts must be >= 1"),
    (["attack", "{run}", "--method", "eigen", "--kind", "foo"], "unknown metric kind"),
    (["attack", "{run}", "--method", "eigen", "--directions", "0"], "directions must be >= 1"),
    (["attack", "{run}", "--targeted", "--method", "eigen"], "--targeted works with"),
    (["attack", "{run}", "--n", "0"], "must be >= 1"),
    (["attack", "{run}", "--batch-size", "0"], "batch_size"),
    (["attack", "{run}", "--targeted", "--n", "1"], "at least 2 inputs"),
    (["compare"], "give the run directories to compare"),
    (["audit", "--model", "diffusers:{missing}"], "no config.json"),
    (["audit", "--model", "pythae:{missing}"], "no model_config.json"),
    (["audit", "--model", "python:no_such_module_xyz:make"], "cannot import no_such_module_xyz"),
    (["audit", "--model", "python:vaelens:no_such_factory"], "no function 'no_such_factory'"),
    (["audit", "{run}", "--model", "pythae:{missing}"], "exactly one of them"),
    (["audit", "{run}", "--method", "fast"], "unknown method"),
    (["audit", "{run}", "--iters", "0"], "iters must be >= 1"),
    (["compare", "{run}", "{missing}"], "does not exist"),
    (["compare", "{run}", "--eps", "0"], "eps > 0"),
    (["compare", "{run}", "--n", "0"], "n must be >= 1"),
    (SWEEP + ["--betas", "1,1"], "betas lists 1.0 more than once"),
    (SWEEP + ["--seeds", "0,0"], "seeds lists 0 more than once"),
    (SWEEP + ["--dataset", "digits,digits"], "datasets lists 'digits' more than once"),
    (SWEEP + ["--betas", "logspace:x"], "malformed beta range"),
    (SWEEP + ["--betas", "-1"], "every beta must be >= 0"),
    (SWEEP + ["--mixup", "maybe"], "mixup must be one of"),
    (SWEEP + ["--model", "rnn"], "unknown model"),
    (SWEEP + ["--eps", "0"], "every eps must be > 0"),
    (SWEEP + ["--jobs", "0"], "--jobs must be >= 1"),
    (SWEEP + ["--preset", "nope"], "unknown preset"),
    (SWEEP + ["--config", "{missing}"], "does not exist"),
    (SWEEP + ["--epochs", "0"], "epochs must be >= 1"),
    (["report", "{missing}"], "has no results.csv"),
    (["info", "{missing}"], "does not exist"),
]


@pytest.mark.parametrize("args, match", CLI_CASES, ids=[" ".join(a[:4]) + f" {m[:20]}" for a, m in CLI_CASES])
def test_cli_bad_input(run_cli, digits_run, tmp_path, args, match):
    fill = {"{run}": str(digits_run), "{missing}": str(tmp_path / "missing")}
    args = [fill.get(a, a) for a in args]
    if args[0] in ("train", "sweep", "audit", "attack", "compare") and "--out" not in args:
        args += ["--out", str(tmp_path / "out")]  # never into the shared run directory
    code, stdout, stderr = run_cli(*args)
    lines = _one_line(code, stdout, stderr)
    assert match in stderr, stderr
    if args[0] != "compare" or len(args) > 1:  # usage errors are click's few lines; ours are one
        assert len(lines) == 1 or "Usage" in stderr, stderr
    assert not (tmp_path / "out" / "state.json").exists()  # refused before training


@pytest.fixture
def run(digits_run, tmp_path):
    shutil.copytree(digits_run, tmp_path / "run")
    return tmp_path / "run"


def _edit_state(run, **changes):
    state = json.loads((run / STATE).read_text())
    state.update(changes)
    (run / STATE).write_text(json.dumps(state))


def _edit_config(run, **changes):
    config = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        target = config
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    (run / "config.json").write_text(json.dumps(config))


def _nan_weights(run):
    from safetensors.torch import load_file, save_file

    path = model_file(run)
    tensors = load_file(str(path))
    first = next(iter(tensors))
    tensors[first][0] = float("nan")
    save_file(tensors, str(path))
    _edit_state(run, model_sha256=sha256(path))


RUN_CASES = [
    (lambda r: _edit_state(r, model_sha256=None), "has no valid model_sha256"),
    (lambda r: _edit_config(r, **{"model.latent_dim": "x"}), "latent_dim: input should be a valid integer"),
    (lambda r: _edit_config(r, epochs=2.5), "epochs: input should be a valid integer"),
    (lambda r: _edit_config(r, beta="high"), "beta: input should be a valid number"),
    (lambda r: _edit_config(r, extra_key=1), "unknown training config keys"),
    (lambda r: (r / "config.json").write_text("[1, 2]"), "must hold a JSON object"),
    (lambda r: (r / STATE).write_text("{"), "state.json is not valid JSON"),
    (_nan_weights, "hold NaN or Inf"),
]


@pytest.mark.parametrize("damage, match", RUN_CASES, ids=[m[:30] for _, m in RUN_CASES])
def test_damaged_run_files(run_cli, run, tmp_path, damage, match):
    damage(run)
    code, stdout, stderr = run_cli("audit", run, "--n", "4", "--probe-n", "0", "--out", tmp_path / "a", "--quiet")
    lines = _one_line(code, stdout, stderr)
    assert len(lines) == 1 and match in stderr, stderr


class _WrongDecoder(torch.nn.Module):
    input_shape = (1, 4, 4)

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Linear(16, 4)

    def encode(self, x):
        h = self.enc(x.flatten(1))
        return h[:, :2], h[:, 2:]

    def decode(self, z):
        return z.repeat(1, 3)  # (B, 6), not (B, 1, 4, 4)


def _tiny_model():
    return vaelens.load  # placeholder, replaced in the cases below


API_CASES = [
    (lambda m: vaelens.pullback_metric(m, torch.zeros(2, 1, 8, 8, dtype=torch.long)), "must be a float tensor"),
    (lambda m: vaelens.pullback_metric(m, torch.zeros(0, 1, 8, 8)), "empty batch"),
    (lambda m: vaelens.pullback_metric(m, torch.full((2, 1, 8, 8), float("nan"))), "NaN or Inf"),
    (lambda m: vaelens.pullback_metric(m, torch.rand(2, 1, 7, 7)), "per-sample shape"),
    (lambda m: vaelens.pullback_metric(m, torch.rand(2, 1, 8, 8) * 255), "must lie in"),
    (lambda m: vaelens.PGD(m, eps=0), "eps must be"),
    (lambda m: vaelens.PGD(m, eps=1.0, norm="l3"), "unknown norm"),
    (lambda m: vaelens.PGD(m, eps=1.0, objective="mmd"), "unknown objective"),
    (lambda m: vaelens.attack_damage(m, torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8)), "shape"),
    (lambda m: vaelens.robustness_scores(torch.rand(5)), "eigenvalues must have shape (B, r)"),
    (lambda m: vaelens.eigen_probe(m, torch.rand(2, 1, 8, 8), directions=0), "directions must be a positive"),
    (lambda m: vaelens.models.ModelConfig(latent_dim="3"), "latent_dim: input should be a valid integer"),
    (lambda m: tiny_config(epochs=2.5), "epochs: input should be a valid integer"),
    (lambda m: vaelens.evaluation.AuditConfig(kinds=("mean", "mean")), "more than once"),
    (lambda m: vaelens.experiments.SweepConfig(seeds=(0, 0)), "more than once"),
    (
        lambda m: vaelens.pullback_metric(_WrongDecoder(), torch.rand(2, 1, 4, 4), "output").eigenvalues(),
        "decode returned",
    ),  # fmt: skip
    (lambda m: vaelens.data.TensorImageDataset(torch.rand(3, 8, 8), torch.zeros(3)), "images must be a tensor"),
]


@pytest.mark.parametrize("call, match", API_CASES, ids=[m[:30] for _, m in API_CASES])
def test_api_bad_input(digits_run, call, match):
    model = vaelens.load(digits_run)
    with pytest.raises(vaelens.VaelensError, match=None) as info:
        call(model)
    assert match in str(info.value) and "\n" not in str(info.value)


def test_train_checks_its_data(tmp_path):
    from vaelens.data import TensorImageDataset

    images = torch.rand(64, 1, 8, 8) * 255  # 8-bit pixels, not [0, 1]
    data = TensorImageDataset(images, torch.zeros(64, dtype=torch.long))
    with pytest.raises(vaelens.VaelensError, match=r"training images has values in \[.*\] but must lie in \[0, 1\]"):
        vaelens.train(tiny_config(), tmp_path / "a", progress=False, train_set=data, test_set=data)
    wrong = TensorImageDataset(torch.rand(64, 1, 6, 6), torch.zeros(64, dtype=torch.long))
    with pytest.raises(vaelens.VaelensError, match="per-sample shape"):
        vaelens.train(tiny_config(), tmp_path / "b", progress=False, train_set=wrong, test_set=wrong)


def test_the_table_is_large_enough():
    assert len(CLI_CASES) + len(RUN_CASES) + len(API_CASES) >= 60
