"""Weights kept at chosen epochs (--save-epochs) and RUN@N references to them."""

import json
import shutil

import pytest
import torch

import vaelens
from vaelens.experiments import load_run_inputs, output_dir, parse_run_ref
from vaelens.training import _trainer, train

from conftest import tiny_config


def _equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """A 4-epoch run keeping epochs 1 and 3, and runs of 1 and 3 epochs to compare against."""
    root = tmp_path_factory.mktemp("kept")
    train(tiny_config(epochs=4, save_epochs=(3, 1)), root / "r", progress=False, checkpoint_every=1e9)
    for e in (1, 3):
        train(tiny_config(epochs=e, cosine_t_max=4), root / f"e{e}", progress=False)
    return root


def test_kept_epochs_equal_shorter_runs_and_are_recorded(kept_run):
    run = kept_run / "r"
    names = {p.name for p in run.iterdir()}
    assert {"epoch-1.safetensors", "epoch-3.safetensors", "model.4.safetensors"} <= names
    state = json.loads((run / "state.json").read_text())
    assert sorted(state["epoch_files"]) == ["1", "3"]
    assert all(len(v["sha256"]) == 64 for v in state["epoch_files"].values())
    for e in (1, 3):  # epoch e of the long run is a run of e epochs on the same schedule
        assert _equal(vaelens.load(run, epoch=e).state_dict(), vaelens.load(kept_run / f"e{e}").state_dict())
    assert _equal(vaelens.load(run, epoch=4).state_dict(), vaelens.load(run).state_dict())
    assert not _equal(vaelens.load(run, epoch=1).state_dict(), vaelens.load(run).state_dict())


def test_final_weights_do_not_depend_on_kept_epochs(kept_run, tmp_path):
    plain = train(tiny_config(epochs=4), tmp_path / "plain", progress=False)
    assert _equal(plain.model.state_dict(), vaelens.load(kept_run / "r").state_dict())


def test_run_refs_parse_and_load(kept_run):
    run = kept_run / "r"
    assert parse_run_ref(f"{run}@3") == (run, 3)
    assert parse_run_ref(run) == (run, None)
    assert output_dir(f"{run}@3", "audit") == run / "audit@3"
    inputs = load_run_inputs(f"{run}@3", n=5)
    assert _equal(inputs.model.state_dict(), vaelens.load(run, epoch=3).state_dict())
    evaluation = kept_run / "r@3"  # a folder named like the reference that is not a run (a sweep's evaluation)
    evaluation.mkdir(exist_ok=True)
    assert parse_run_ref(evaluation) == (run, 3)
    for bad, match in ((f"{run}@x", "positive integer"), (f"{run}@0", "positive integer"), (f"{run}@2", "kept no")):
        with pytest.raises(vaelens.VaelensError, match=match):
            load_run_inputs(bad, n=5)


def test_tampered_or_missing_epoch_file_is_refused(kept_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(kept_run / "r", run)
    path = run / "epoch-3.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(vaelens.VaelensError, match="checksum"):
        vaelens.load(run, epoch=3)
    vaelens.load(run, epoch=1)  # the other kept epoch is intact
    (run / "epoch-1.safetensors").unlink()
    with pytest.raises(vaelens.VaelensError, match="does not exist"):
        vaelens.load(run, epoch=1)
    state = json.loads((run / "state.json").read_text())
    state["epoch_files"]["1"]["sha256"] = "bad"
    (run / "state.json").write_text(json.dumps(state))
    with pytest.raises(vaelens.VaelensError, match="no valid sha256"):
        vaelens.load(run, epoch=1)


def test_resume_keeps_epochs_and_equals_uninterrupted(kept_run, tmp_path, monkeypatch):
    original = _trainer.evaluate_reconstruction
    calls = []

    def crash_in_epoch_four(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(_trainer, "evaluate_reconstruction", crash_in_epoch_four)
    config = tiny_config(epochs=4, save_epochs=(1, 3))
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "r", progress=False, checkpoint_every=1e9)
    monkeypatch.setattr(_trainer, "evaluate_reconstruction", original)
    assert json.loads((tmp_path / "r" / "state.json").read_text())["epoch"] == 3  # a kept epoch checkpoints
    train(config, tmp_path / "r", progress=False, checkpoint_every=1e9)
    for e in (1, 3, None):
        assert _equal(
            vaelens.load(tmp_path / "r", epoch=e).state_dict(), vaelens.load(kept_run / "r", epoch=e).state_dict()
        )


def test_unnamed_epoch_file_is_removed_on_reopen(kept_run, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(kept_run / "r", run)
    (run / "epoch-2.safetensors").write_bytes(b"left by a killed writer")
    train(tiny_config(epochs=4, save_epochs=(1, 3)), run, progress=False)
    assert not (run / "epoch-2.safetensors").exists()
    assert (run / "epoch-1.safetensors").exists()


@pytest.mark.parametrize("epochs", [(0,), (5,)])
def test_save_epochs_out_of_range(epochs):
    with pytest.raises(vaelens.VaelensError, match="save_epochs"):
        tiny_config(epochs=4, save_epochs=epochs)


def test_cli_train_save_epochs_and_audit_at_an_epoch(run_cli, tmp_path):
    run = tmp_path / "r"
    code, _, err = run_cli("train", "--out", run, "--dataset", "digits", "--latent-dim", "3", "--hidden", "16",
                           "--epochs", "2", "--save-epochs", "1", "--quiet")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("audit", f"{run}@1", "--n", "8", "--probe-n", "0", "--quiet")
    assert code == 0, err
    assert (run / "audit@1" / "scores.csv").is_file()
    code, _, err = run_cli("attack", f"{run}@1", "--n", "8", "--steps", "2", "--quiet")
    assert code == 0, err
    assert (run / "attack-pgd@1" / "damage.csv").is_file()
    code, _, err = run_cli("audit", f"{run}@2", "--n", "8", "--probe-n", "0", "--quiet")
    assert code == 0, err  # the last epoch is always there
    code, _, err = run_cli("audit", f"{run}@7", "--n", "8", "--quiet")
    assert code == 2 and "kept no weights of epoch 7" in err
