"""pythae's whole zoo from ``pythae:DIR``, as pythae's own TrainingPipeline writes it (docs/method.md s. 1).

All 25 model classes of pythae 0.1.2 are trained for one epoch with their default networks; each
``final_model`` folder must load without unpickling, match pythae's own loader key by key, and
audit from the CLI: Gaussian classes with every metric kind, deterministic ones with the kinds that
apply (and a one-line refusal of the others), flows, hyperbolic and vMF posteriors refused in one line.
The fresh-process run of the console script is in test_user_path.py.
"""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch

from vaelens import VaelensError
from vaelens.adapters import FlowPosteriorWarning, from_pythae, load_pythae

from conftest import PYTHAE_DETERMINISTIC, PYTHAE_GAUSSIAN, PYTHAE_REFUSED

pytest.importorskip("pythae.models")
pytestmark = pytest.mark.slow  # the session fixture trains 25 models (about a minute)
ALL_KINDS = "mean,stochastic,fisher,output,output-stochastic"


def test_the_zoo_is_pythaes_whole_model_list():
    import pythae.models as models

    exported = {n for n in dir(models) if isinstance(getattr(models, n), type) and not n.endswith("Config")}
    assert exported - {"AutoModel", "BaseAE"} == {*PYTHAE_GAUSSIAN, *PYTHAE_DETERMINISTIC, *PYTHAE_REFUSED}


@pytest.mark.parametrize("name", PYTHAE_GAUSSIAN + PYTHAE_DETERMINISTIC + PYTHAE_REFUSED)
def test_pipeline_folder_loads_like_pythaes_own_loader(pythae_zoo, name):
    import pythae.models as models

    model = load_pythae(pythae_zoo[name].parent)  # the training folder is read as its final_model
    reference = models.AutoModel.load_from_folder(str(pythae_zoo[name]))
    assert type(model) is type(reference)
    theirs = reference.state_dict()
    assert model.state_dict().keys() == theirs.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


@pytest.mark.parametrize("name", PYTHAE_GAUSSIAN)
def test_gaussian_classes_audit_with_every_kind(pythae_zoo, run_cli, tmp_path, name):
    refined = (
        pytest.warns(FlowPosteriorWarning, match="Hamiltonian flow") if name in ("HVAE", "RHVAE") else nullcontext()
    )
    with refined:  # HVAE, RHVAE: vaelens reads the Gaussian before the flow, and says so
        code, _, err = run_cli("audit", "--model", f"pythae:{pythae_zoo[name]}", "--n", "3", "--kind", ALL_KINDS,
                           "--probe-n", "0", "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["summary"]) == set(ALL_KINDS.split(","))
    assert summary["dataset"] == "digits"  # the offline set its (1, 8, 8) shape fits


@pytest.mark.parametrize("name", PYTHAE_DETERMINISTIC)
def test_deterministic_classes_audit_with_the_kinds_that_apply(pythae_zoo, run_cli, tmp_path, name):
    spec = f"pythae:{pythae_zoo[name]}"
    code, _, err = run_cli("audit", "--model", spec, "--n", "3", "--kind", "mean,output", "--probe-n", "0",
                           "--out", tmp_path / "a", "--quiet")  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("audit", "--model", spec, "--n", "3", "--kind", "stochastic", "--out", tmp_path / "b")
    assert code == 2 and "deterministic encoder" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("name", PYTHAE_REFUSED)
def test_flow_hyperbolic_and_vmf_posteriors_are_refused_in_one_line(pythae_zoo, run_cli, tmp_path, name):
    code, _, err = run_cli("audit", "--model", f"pythae:{pythae_zoo[name]}", "--n", "3", "--out", tmp_path / "a")
    assert code == 2 and f"pythae {name} has" in err and "not supported" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    with pytest.raises(VaelensError, match="not the diagonal Gaussian"):
        from_pythae(load_pythae(pythae_zoo[name]))
