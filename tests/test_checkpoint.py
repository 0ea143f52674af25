import json
import pickle
import shutil

import pytest
import torch

import vaelens
from vaelens._tensors import sha256
from vaelens.training import STATE, model_file


@pytest.fixture
def run(digits_run, tmp_path):
    shutil.copytree(digits_run, tmp_path / "run")
    return tmp_path / "run"


def test_load_round_trip_key_by_key(run):
    from safetensors.torch import load_file

    model = vaelens.load(run)
    assert not model.training
    saved = load_file(str(model_file(run)))
    state = model.state_dict()
    assert set(saved) == set(state)
    for key in saved:
        assert torch.equal(saved[key], state[key]), key


def test_loaded_model_reproduces_training_outputs(digits_run):
    from vaelens.data import load_dataset
    from vaelens.training import evaluate_reconstruction

    model = vaelens.load(digits_run)
    final = json.loads((digits_run / STATE).read_text())["final"]
    recon, _ = evaluate_reconstruction(model, load_dataset("digits", "test"), "bernoulli")
    assert recon == pytest.approx(final["test_recon"], rel=1e-6)


def test_truncated_weights_are_rejected(run):
    data = (model_file(run)).read_bytes()
    (model_file(run)).write_bytes(data[: len(data) // 2])
    with pytest.raises(vaelens.VaelensError, match=r"model.2.safetensors"):
        vaelens.load(run)


def test_tampered_weights_are_rejected(run):
    data = bytearray((model_file(run)).read_bytes())
    data[-5] ^= 0xFF  # flip bits in the last weight
    (model_file(run)).write_bytes(bytes(data))
    with pytest.raises(vaelens.VaelensError, match=r"model.2.safetensors does not match its recorded checksum"):
        vaelens.load(run)


def _update_checksum(run):
    state = json.loads((run / STATE).read_text())
    state["model_sha256"] = sha256(model_file(run))
    (run / STATE).write_text(json.dumps(state))


def test_corrupt_but_checksummed_weights_are_rejected(run):
    (model_file(run)).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _update_checksum(run)
    with pytest.raises(vaelens.VaelensError, match="not a valid safetensors file"):
        vaelens.load(run)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_never_executed(run, tmp_path):
    marker = tmp_path / "pwned"
    (model_file(run)).write_bytes(pickle.dumps({"w": _Payload(str(marker))}))
    _update_checksum(run)  # even a matching checksum must not make us unpickle
    with pytest.raises(vaelens.VaelensError, match=r"model.2.safetensors"):
        vaelens.load(run)
    assert not marker.exists()


def test_weights_of_another_model_are_rejected(run, tmp_path):
    from safetensors.torch import save_file

    from vaelens.models import MLPVAE

    other = MLPVAE(input_shape=(1, 8, 8), latent_dim=5, hidden=(32, 16))
    save_file(other.state_dict(), str(model_file(run)))
    _update_checksum(run)
    with pytest.raises(vaelens.VaelensError, match="does not fit the model.*wrong shape"):
        vaelens.load(run)


def test_corrupt_config_is_rejected(run):
    (run / "config.json").write_text("{ half")
    with pytest.raises(vaelens.VaelensError, match="config.json is not valid JSON"):
        vaelens.load(run)


def test_config_with_bad_values_names_the_file(run):
    cfg = json.loads((run / "config.json").read_text())
    cfg["beta"] = -3
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(vaelens.VaelensError, match="config.json.*beta must be >= 0"):
        vaelens.load(run)


def test_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(vaelens.VaelensError, match="does not exist"):
        vaelens.load(tmp_path / "nope")


def test_weights_without_a_recorded_checksum_are_refused(run):
    state = json.loads((run / STATE).read_text())
    del state["model_sha256"]
    (run / STATE).write_text(json.dumps(state))
    with pytest.raises(vaelens.VaelensError, match="has no valid model_sha256, so the weights cannot be checked"):
        vaelens.load(run)


def test_run_from_before_crash_consistent_checkpoints_still_loads(run):
    """Runs written with the fixed names model.safetensors / optim.safetensors keep loading."""
    state = json.loads((run / STATE).read_text())
    reference = vaelens.load(run).state_dict()
    for kind in ("model", "optim"):
        (run / state[f"{kind}_file"]).rename(run / f"{kind}.safetensors")
        del state[f"{kind}_file"]
    (run / STATE).write_text(json.dumps(state))
    loaded = vaelens.load(run).state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
