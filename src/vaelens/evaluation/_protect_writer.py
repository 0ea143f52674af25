"""protect's output directory (docs/method.md section 9): the protected PNGs, protect.csv and summary.json.

protect.csv has one schema: ``protect_columns`` names every column, ``protection_row`` fills a row
through the same names (``MEASURES``, ``check_column`` and ``encoder_column``), and summary.json
averages the same ``MEASURES``. The first attacked encoder's block of columns keeps the plain
names; every other encoder (attacked or only evaluated) gets its own block, each column prefixed
with its label ("sdxl/jpeg_held"). summary.json also holds each encoder's held counts and the
transfer table: the held rate on each encoder of a protection made against the attacked ones.
The originals are never written: an ``--out`` that is, holds or lies inside the
images' directory is refused, and so is any file in ``--out`` that vaelens did not write, with or
without ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vaelens._errors import VaelensError
from vaelens._io import write_csv, write_json
from vaelens._outputs import check_out_path, claim_output, finish_output, read_marker
from vaelens.evaluation._images import ImageFile, write_like, write_png
from vaelens.evaluation._protect import EncoderCheck, ProtectConfig, Protection
from vaelens.evaluation._transforms import EVALUATED

ENCODER_MEASURES = ("distance_before", "distance_after", "recon_psnr_clean", "recon_psnr")
"""The fields of each ``EncoderCheck``: one block of columns per encoder."""
MEASURES = (*ENCODER_MEASURES, "perturbation_psnr", "linf")
"""The fields of ``Protection`` that protect.csv holds for each image, and summary.json averages."""
CHECKS = ("distance_clean", "distance", "held")
"""The fields of each ``TransformCheck``, one column per transform and field."""
TABLES = ("protect.csv", "summary.json")


def check_column(transform: str, what: str) -> str:
    """The protect.csv column of one field of one transform's check, e.g. "jpeg_held"."""
    return f"{transform}_{what}"


def check_columns() -> list[str]:
    """The per-transform columns of protect.csv, in ``EVALUATED`` order."""
    return [check_column(t, what) for t in EVALUATED for what in CHECKS]


def encoder_column(label: str, column: str) -> str:
    """A column of the block of a non-primary encoder, e.g. "sdxl/jpeg_held"."""
    return f"{label}/{column}"


def protect_columns(evaluate: bool = True, encoders: Sequence[str] = ()) -> list[str]:
    """Every column of protect.csv, in order: the one place they are named. ``encoders``: every
    encoder's label, the primary first (its block keeps the plain names); empty: one encoder."""
    checks = check_columns() if evaluate else []
    blocks = [encoder_column(e, c) for e in list(encoders)[1:] for c in (*ENCODER_MEASURES, *checks)]
    return ["image", "height", "width", *MEASURES, *checks, *blocks]


def _block(e: EncoderCheck) -> dict[str, Any]:
    block: dict[str, Any] = {m: getattr(e, m) for m in ENCODER_MEASURES}
    for t, check in e.checks.items():
        block.update({check_column(t, what): getattr(check, what) for what in CHECKS})
        block[check_column(t, "held")] = int(check.held)
    return block


def protection_row(name: str, p: Protection) -> dict[str, Any]:
    """One protect.csv row: the image's file name, its size, the ``MEASURES`` and every check, and
    a block per further encoder."""
    row: dict[str, Any] = {"image": name, "height": p.image.shape[-2], "width": p.image.shape[-1]}
    row.update({m: getattr(p, m) for m in MEASURES})
    for i, (label, e) in enumerate(p.encoders.items()):
        block = _block(e)
        row.update(block if i == 0 else {encoder_column(label, c): v for c, v in block.items()})
    return row


def held_counts(results: dict[str, Protection], encoder: str | None = None) -> dict[str, int]:
    """{transform: how many images' protection held after it}, on ``encoder`` (default the primary)."""
    checks = [p.encoders[encoder].checks if encoder else p.checks for p in results.values()]
    return {t: sum(c[t].held for c in checks if t in c) for t in EVALUATED}


def transfer_table(results: dict[str, Protection]) -> dict[str, dict[str, float]]:
    """{attacked: {encoder: held rate}}: the share of (image, transform) pairs whose protection held,
    on every encoder, for the protection made against the attacked ones ("a+b" for an ensemble).
    One row per run; rows of several runs make the transfer matrix (attacked on rows)."""
    first = next(iter(results.values()))
    row = "+".join(first.attacked) or next(iter(first.encoders))
    rates = {}
    for label in first.encoders:
        held = [c.held for p in results.values() for c in p.encoders[label].checks.values()]
        rates[label] = sum(held) / len(held) if held else float("nan")
    return {row: rates}


def transfer_pull(results: dict[str, Protection]) -> dict[str, dict[str, float]]:
    """{attacked: {encoder: mean relative pull}}: the mean over images of (d(x) - d(x_p)) / d(x) on
    every encoder, untransformed. A held rate alone flatters a weak protection (a small pull
    survives a transform as easily as a large one); this says how far each code actually moved."""
    first = next(iter(results.values()))
    row = "+".join(first.attacked) or next(iter(first.encoders))
    shares = {}
    for label in first.encoders:
        values = [p.encoders[label].pull / p.encoders[label].distance_before for p in results.values()]
        shares[label] = float(np.mean(values))
    return {row: shares}


def output_name(name: str) -> str:
    """The protected copy of image file ``name``: NAME.png."""
    return f"{Path(name).stem}.png"


def protect_output(config: ProtectConfig, meta: dict | None = None) -> dict:
    """What a protection's output directory is claimed with: its config and where its inputs came from."""
    return {"protect": {**asdict(config), "robust": list(config.robust)}, **(meta or {})}


def check_not_images(out: str | Path, images: str | Path) -> None:
    """Refuse, in one line, an ``--out`` that is, holds or lies inside the directory of the originals."""
    out_path, images_path = Path(out).expanduser().resolve(), Path(images).expanduser().resolve()
    if out_path == images_path or images_path in out_path.parents or out_path in images_path.parents:
        where = "is" if out_path == images_path else "lies inside" if images_path in out_path.parents else "holds"
        raise VaelensError(
            f"--out {out} {where} --images {images}; protect never writes where the originals are, "
            "with or without --overwrite: choose an --out outside it"
        )


def claim_protection(
    out: str | Path, names: list[str], config: ProtectConfig, meta: dict | None = None, overwrite: bool = False
) -> Path:
    """Claim ``out`` for the protected copies of ``names``, refusing to write over any file vaelens did
    not write there (with or without ``overwrite``), and over the originals (``meta["images"]``)."""
    if meta and meta.get("images"):
        check_not_images(out, meta["images"])
    out = check_out_path(out)
    files = [*(output_name(n) for n in names), *TABLES]
    marker = read_marker(out) if out.is_dir() else None
    ours = set(marker.get("files", [])) if marker else set()
    foreign = [f for f in files if (out / f).exists() and f not in ours]
    if foreign:
        raise VaelensError(
            f"{out / foreign[0]} exists and was not written by vaelens; protect never writes over a file it "
            "did not create, with or without --overwrite: move it or choose another --out"
        )
    return claim_output(out, "protect", protect_output(config, meta), overwrite, files)


def write_protection(
    results: dict[str, Protection],
    out: str | Path,
    config: ProtectConfig,
    meta: dict | None = None,
    overwrite: bool = False,
    sources: dict[str, ImageFile] | None = None,
) -> dict[str, Path]:
    """Write the protected PNGs, protect.csv (one row per image) and summary.json (held counts
    per transform) into ``out``, each atomically, the directory's marker last; return {name: path}.

    A directory another command or config wrote is refused unless ``overwrite``; a file vaelens
    did not write is never written over. ``sources`` ({name: ``ImageFile``}, as read): each copy
    is written in its original's form (16-bit, alpha, colour profile); else as 8-bit gray or RGB.
    """
    out = claim_protection(out, list(results), config, meta, overwrite)
    paths: dict[str, Path] = {}
    for name, p in results.items():
        paths[name] = out / output_name(name)
        if sources is not None and name in sources:
            write_like(paths[name], p.image, sources[name])
        else:
            write_png(paths[name], p.image)
    paths["protect.csv"] = out / "protect.csv"
    rows = [protection_row(n, p) for n, p in results.items()]
    encoders = list(next(iter(results.values())).encoders)
    write_csv(paths["protect.csv"], rows, protect_columns(config.evaluate, encoders))
    paths["summary.json"] = out / "summary.json"
    write_json(paths["summary.json"], protection_summary(results, config, meta))
    finish_output(out, [p.name for p in paths.values()])
    return paths


def protection_summary(results: dict[str, Protection], config: ProtectConfig, meta: dict | None = None) -> dict:
    """summary.json: the config, means of ``MEASURES``, held counts on the primary encoder and on
    each encoder, and the transfer table (``transfer_table``) when evaluated."""
    mean = {m: float(np.mean([getattr(p, m) for p in results.values()])) for m in MEASURES}
    summary: dict[str, Any] = {**protect_output(config, meta), "n": len(results), "mean": mean}
    first = next(iter(results.values()))
    if config.evaluate:
        summary["held"] = held_counts(results)
        summary["encoders"] = {
            label: {"attacked": label in first.attacked, "held": held_counts(results, label)}
            for label in first.encoders
        }
        summary["transfer"] = transfer_table(results)
    summary["transfer_pull"] = transfer_pull(results)
    return summary
