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
@pytest.mark.parametrize(
    "names", [("losses.csv", "model.3.safetensors"), ("state.json",), ("notes.txt",), ("draft.tmp",)]
)
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
        lambda r: r.update(models="python:m.py:a"),  # a string would be read letter by letter
    ],
)
def test_a_protector_with_a_garbled_record_is_one_line_naming_its_config(tmp_path, garble):
    train_protector(["python:m.py:a"], "images", "prot", TRAIN, progress=False)
    record = json.loads((tmp_path / "prot" / "config.json").read_text())
    garble(record)
    (tmp_path / "prot" / "config.json").write_text(json.dumps(record))
    with pytest.raises(VaelensError, match="prot/config.json garbles the protector's record"):
        load_protector("prot")


# ---- bench (local): submissions checked before --out is claimed, its own files read back safely ----


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("python:m.py:gray", None),  # takes (1, H, W): measured, not refused
        ("python:m.py:a", "takes image inputs (B, 3, H, W); protocol tiny measures every entry on the same digits"),
        ("python:missing.py:make", "missing.py does not exist"),
        ("pythae:nowhere", "nowhere"),
    ],
)
def test_bench_refuses_a_submission_it_cannot_measure_before_claiming_out(run_cli, tmp_path, spec, message):
    from vaelens.experiments import _bench

    if message is None:  # the check lets a model of the protocol's shape through, at once
        protocol = _bench.get_protocol("tiny")
        entry = _bench.submitted_entry(spec, protocol)
        _bench._check_submitted(protocol, [entry], _bench.test_inputs(protocol))
        return
    code, out, err = run_cli("bench", "--protocol", "tiny", "--model", spec, "--out", "b", "--quiet")
    assert code == 2 and message in err and "--channels" not in err and "Traceback" not in out + err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_bench_refuses_an_out_that_is_a_file(tmp_path):
    from vaelens.experiments._bench import _claim, get_protocol

    (tmp_path / "f").write_text("mine\n")
    with pytest.raises(VaelensError, match="is a file, not a directory"):
        _claim(tmp_path / "f", get_protocol("tiny"))
    assert (tmp_path / "f").read_text() == "mine\n"


def test_a_garbled_measurement_is_measured_again_not_a_traceback(tmp_path):
    from vaelens.experiments._bench import Entry, _read_measured, _record_keys, get_protocol

    protocol = get_protocol("tiny")
    entry = Entry("mine", "mine", "submitted", {0: "x"})
    path = tmp_path / "seed0.json"
    good = {**dict.fromkeys(_record_keys(protocol), 1.0), "entry": "mine", "seed": 0, "defence": "none"}
    for text in ("{garbled", "[1, 2]", json.dumps({"entry": 1}), json.dumps({**good, "entry": "other"})):
        path.write_text(text)
        assert _read_measured(path, protocol, entry, 0) is None, text
    path.write_text(json.dumps({**good, "beta": None}))
    found = _read_measured(path, protocol, entry, 0)
    assert found is not None and found["test_mse"] == 1.0 and found["beta"] != found["beta"]  # null is NaN


GOOD_MEMBER = {"family": "beta-0.5", "seed": 0, "protocol": "tiny", "spec": "run", "source": "vaelens", "beta": 0.5,
               "defence": "none", "train_seconds": None, "parameters": 10}  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["{garbled", "[1]", '{"family": "beta-0.5"}', '{"family": "beta-0.5", "seed": 0}',
     json.dumps({**GOOD_MEMBER, "parameters": None}), json.dumps({**GOOD_MEMBER, "seed": "0"}),
     json.dumps({**GOOD_MEMBER, "beta": "half"}), json.dumps({**GOOD_MEMBER, "spec": 3})],
)  # fmt: skip
def test_a_garbled_member_record_is_an_unfinished_member_not_a_traceback(tmp_path, text):
    from vaelens.experiments._bench import zoo_entries
    from vaelens.experiments._bench_protocol import get_protocol
    from vaelens.experiments._zoo import MEMBER_KEYS, ZooMember, read_member

    tiny, member = get_protocol("tiny"), ZooMember("beta-0.5", 0)
    (tmp_path / "beta-0.5" / "seed0").mkdir(parents=True)
    (tmp_path / "zoo.json").write_text(json.dumps({"protocol": tiny.to_dict()}))
    path = tmp_path / "beta-0.5" / "seed0" / "member.json"
    path.write_text(text)
    assert read_member(tmp_path, member) is None and zoo_entries(tmp_path, tiny) == []
    record = {**GOOD_MEMBER, "extra": "kept"}
    assert set(MEMBER_KEYS) <= set(record)
    path.write_text(json.dumps(record))
    assert read_member(tmp_path, member) == record and [e.name for e in zoo_entries(tmp_path, tiny)] == ["beta-0.5"]


def test_train_zoo_refuses_an_out_that_is_a_file(tmp_path):
    from vaelens.experiments import train_zoo

    (tmp_path / "f").write_text("mine\n")
    with pytest.raises(VaelensError, match="is a file, not a directory"):
        train_zoo("tiny", tmp_path / "f", families=["beta-0.5"], progress=False)
    assert (tmp_path / "f").read_text() == "mine\n"


# ---- certify: refusals claim nothing, an all-abstaining bracket still writes its figure ----

CERTIFY = ("--n", "100", "--n0", "10", "--alpha", "0.2", "--inputs", "2", "--quiet")


@pytest.mark.parametrize(
    "options", [("--attack", "--attack-inputs", "0"), ("--batch-size", "0"), ("--attack", "--steps", "0")]
)
def test_certify_refuses_bad_attack_settings_before_claiming_out(run_cli, digits_run, tmp_path, options):
    code, out, err = run_cli("certify", digits_run, *CERTIFY, *options, "--out", tmp_path / "c")
    assert code == 2 and "must be >= 1" in err and "Traceback" not in out + err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_certify_with_attack_where_every_input_abstains_writes_a_finished_output(run_cli, digits_run, tmp_path):
    args = ("certify", digits_run, *CERTIFY, "--attack", "--steps", "1", "--attack-inputs", "1")
    code, out, err = run_cli(*args, "--out", tmp_path / "c")
    assert code == 0 and "Traceback" not in out + err, err
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert all(r["abstain_rate"] == 1.0 for r in summary["outputs"][0]["per_eps"])  # the case under test
    marker = json.loads((tmp_path / "c" / ".vaelens.json").read_text())
    assert marker["complete"] is True and (tmp_path / "c" / "bracket.png").stat().st_size > 0


# ---- video protect: clip by clip, the same files as the whole-folder path ----


@pytest.mark.slow  # imports diffusers (the test model lives beside its video tests)
def test_video_protect_works_clip_by_clip_and_writes_what_the_folder_path_writes(tmp_path, monkeypatch):
    pytest.importorskip("av")
    from test_video import FlatVideo

    from vaelens.evaluation import (
        ProtectConfig,
        _protect_video,
        protect_video_files,
        protect_videos,
        read_clip,
        video_files,
        write_video_protection,
    )

    from conftest import write_clip

    (tmp_path / "clips").mkdir()
    for i in range(2):
        write_clip(tmp_path / "clips" / f"c{i}.mp4", [(40 * j, 200 - 30 * j, 90 + i * 50) for j in range(6)], (8, 8))
    config, model, files = ProtectConfig(eps=8, steps=2), FlatVideo((3, 5, 8, 8)), video_files(tmp_path / "clips")
    clips = {p.name: read_clip(p) for p in files}
    whole = write_video_protection(protect_videos(model, clips, config, progress=False), clips, tmp_path / "a", config)
    seen = []

    def reading(path):  # which protected copies exist when each clip is decoded
        seen.append((path.name, sorted(p.name for p in (tmp_path / "b").glob("*.mkv"))))
        return read_clip(path)

    monkeypatch.setattr(_protect_video, "read_clip", reading)
    run = protect_video_files(model, files, tmp_path / "b", config, progress=False)
    assert seen[2:] == [("c0.mp4", []), ("c1.mp4", ["c0.mkv"])]  # c0 written (and freed) before c1 is decoded
    assert seen[:2] == [("c0.mp4", []), ("c1.mp4", [])]  # every clip checked before --out is claimed
    for name in clips:
        assert (read_clip(run.paths[name]).frames == read_clip(whole[name]).frames).all()
        assert run.results[name].frames.shape == clips[name].frames.shape
    assert (tmp_path / "a" / "protect.csv").read_text() == (tmp_path / "b" / "protect.csv").read_text()


# ---- images only read (protect-train's photos, --target, --mask): 16-bit colour at 8 bits ----


def test_a_16_bit_colour_photo_is_read_at_8_bits_for_training_but_refused_for_protecting(tmp_path):
    import numpy as np
    from test_surfaces import png16

    from vaelens.evaluation import read_image, read_image_file, read_images

    array = np.random.default_rng(0).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    png16(tmp_path / "deep.png", array)
    pixels = read_image(tmp_path / "deep.png", written=False)  # (3, 5, 7) uint8: the high byte of each sample
    assert pixels.shape == (3, 5, 7) and (pixels.permute(1, 2, 0).numpy() == array >> 8).all()
    assert read_images(tmp_path, written=False)["deep.png"].shape == (3, 5, 7)
    for read in (read_image_file, read_image, read_images):  # the library's protect path: refused by default
        with pytest.raises(VaelensError, match="16-bit RGB image, which vaelens can read only as 8 bits"):
            read(tmp_path / "deep.png" if read is not read_images else tmp_path)


# ---- smooth: specs (compare, attack, bench --model): the spec's settings named, not flags ----


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("nan", "sigma must be a finite number > 0; got nan"),
        ("-1", "sigma must be a finite number > 0"),
        ("0.25,n=5,n0=10", "n0 must be smaller than n; got n0=10, n=5"),
        ("0.25,alpha=2", "alpha must lie in (0, 1); got 2.0"),
        ("0.25,output=x", "output must be one of latent, recon"),
    ],
)
def test_a_bad_smooth_setting_names_the_spec_not_a_flag(digits_run, settings, message):
    from vaelens.experiments import load_model

    spec = f"smooth:{settings}:{digits_run}"
    with pytest.raises(VaelensError) as e:
        load_model(spec)
    assert str(e.value).startswith(f"{spec!r}: {message}") and "--" not in str(e.value).replace(str(digits_run), "")


def test_a_smooth_spec_of_a_missing_run_is_one_line_naming_it(run_cli, tmp_path):
    code, out, err = run_cli("compare", "--model", f"smooth:0.25:{tmp_path / 'nope'}", "--out", tmp_path / "c")
    assert code == 2 and "nope does not exist" in err and "Traceback" not in out + err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("named", [False, True])
def test_bench_never_writes_into_a_submitted_models_folder(tmp_path, named):
    from vaelens.experiments import run_bench

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "model_config.json").write_text("{}")
    spec = f"{'mine=' if named else ''}pythae:{tmp_path / 'vae'}"
    with pytest.raises(VaelensError, match="lies inside the model's folder"):
        run_bench("tiny", tmp_path / "vae" / "bench", models=[spec], progress=False)
    assert sorted(p.name for p in (tmp_path / "vae").iterdir()) == ["model_config.json"]


@pytest.mark.usefixtures("workspace")
def test_a_shorter_epochs_trains_nothing_and_keeps_the_records_count(tmp_path):
    two = ProtectorTrainConfig(**{**TRAIN.__dict__, "epochs": 2})
    first = train_protector(["python:m.py:a"], "images", "prot", two, progress=False)
    again = train_protector(["python:m.py:a"], "images", "prot", TRAIN, progress=False)  # --epochs 1
    assert again.resumed_from == 2 and again.losses == first.losses
    record = json.loads((tmp_path / "prot" / "config.json").read_text())
    assert record["protector"]["epochs"] == 2 and load_protector("prot").epochs == 2


def test_the_smoothed_noise_member_records_its_own_family_and_reads_back(tmp_path):
    from vaelens.experiments._bench_protocol import get_protocol
    from vaelens.experiments._zoo import ZooMember, read_member, train_member

    noise = tmp_path / "noise" / "seed0"
    noise.mkdir(parents=True)
    record = {**GOOD_MEMBER, "family": "noise", "spec": "noise/seed0/run"}
    (noise / "member.json").write_text(json.dumps(record))
    smoothed = train_member(get_protocol("tiny"), ZooMember("smoothed-noise", 0), tmp_path)
    assert smoothed["family"] == "smoothed-noise" and smoothed["spec"].endswith(":noise/seed0/run")
    assert read_member(tmp_path, ZooMember("smoothed-noise", 0)) == smoothed


@pytest.mark.parametrize("name", ["..", ".", " x", "a\\b"])
def test_bench_refuses_an_entry_name_that_would_not_be_its_own_folder(tmp_path, name):
    from vaelens.experiments._bench import get_protocol, submitted_entry

    with pytest.raises(VaelensError, match="cannot name an entry"):
        submitted_entry(f"{name}={tmp_path}", get_protocol("tiny"))
    assert submitted_entry(f"mine={tmp_path}", get_protocol("tiny")).name == "mine"


@pytest.mark.usefixtures("workspace")
def test_bench_refuses_two_entries_that_would_share_a_folder(run_cli, tmp_path):
    # "python:m.py:gray" is measured into entries/python_m.py_gray: so would an entry of that name
    code, out, err = run_cli("bench", "--protocol", "tiny", "--model", "python_m.py_gray=python:m.py:gray",
                             "--model", "python:m.py:gray", "--out", "b", "--quiet")  # fmt: skip
    assert code == 2 and "would share one folder" in err and "Traceback" not in out + err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


@pytest.mark.usefixtures("workspace")
def test_protect_train_resumes_when_the_same_photos_are_named_by_another_path(tmp_path):
    train_protector(["python:m.py:a"], "images", "prot", TRAIN, progress=False)  # --images as typed: relative
    two = ProtectorTrainConfig(**{**TRAIN.__dict__, "epochs": 2})
    again = train_protector(["python:m.py:a"], tmp_path / "images", "prot", two, progress=False)
    assert again.resumed_from == 1  # the same folder, so the same run: resumed, not refused as other images
