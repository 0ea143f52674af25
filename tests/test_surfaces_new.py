"""Bad input and faults on the surfaces added after the first audit of issue 24: video protect,
protect-train and ``protect --protector``, bench and train-zoo (local executor), certify and the
``smooth:`` specs. Each case is one line (or a ``VaelensError`` naming the file), nothing claimed
on disk by a refused command, and no file vaelens did not write replaced or removed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_protect_ensemble import one_thread  # noqa: F401  (autouse: one torch thread)
from test_protector import workspace  # noqa: F401  (m.py and images/ in a fresh folder)

from vaelens import VaelensError
from vaelens.evaluation import ProtectorTrainConfig
from vaelens.experiments import load_protector, train_protector

TRAIN = ProtectorTrainConfig(epochs=1, crop=16, batch_size=4, crops_per_image=2, width=4)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize("names", [("losses.csv", "model.3.safetensors"), ("state.json",), ("notes.txt",)])
def test_protect_train_never_takes_a_folder_it_did_not_write(tmp_path, names):
    out = tmp_path / "mine"
    out.mkdir()
    for name in names:
        (out / name).write_text(f"the user's {name}\n")
    before = _digest(out)
    with pytest.raises(VaelensError, match="not empty .* not written by `vaelens protect-train`"):
        train_protector(["python:m.py:a"], "images", out, TRAIN, progress=False)
    assert _digest(out) == before and sorted(p.name for p in out.iterdir()) == sorted(names)  # not even a lock


@pytest.mark.usefixtures("workspace")
def test_protect_train_takes_the_folder_a_killed_claim_left(tmp_path):
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".lock").write_text("")
    (tmp_path / "killed" / ".config.json.x1.tmp").write_text("{")
    run = train_protector(["python:m.py:a"], "images", "killed", TRAIN, progress=False)
    assert len(run.losses) == 1 and (tmp_path / "killed" / "config.json").is_file()


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    "garble",
    [
        lambda r: r.pop("models"),
        lambda r: r.update(models=5, net=[1]),
        lambda r: r["net"].update(channels="x"),
        lambda r: r.pop("net"),
    ],
)
def test_a_protector_with_a_garbled_record_is_one_line_naming_its_config(tmp_path, garble):
    train_protector(["python:m.py:a"], "images", "prot", TRAIN, progress=False)
    record = json.loads((tmp_path / "prot" / "config.json").read_text())
    garble(record)
    (tmp_path / "prot" / "config.json").write_text(json.dumps(record))
    with pytest.raises(VaelensError, match="prot/config.json garbles the protector's record"):
        load_protector("prot")
