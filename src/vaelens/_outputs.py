"""Output directories that belong to one command.

Every directory vaelens writes results into holds a marker, ``.vaelens.json``, naming the command
that wrote it and the config it ran with. A command refuses, in one line, to write into a
directory that another command, another config, or no vaelens command wrote, unless told to
overwrite. The marker is also the "done" record: it is written with ``complete: false`` before the
first result file and rewritten with ``complete: true`` after the last, so a half-written result
never looks finished to a sweep or a report.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaelens._errors import VaelensError
from vaelens._io import json_safe, read_json, remove_stale_temps, write_json

MARKER = ".vaelens.json"


def check_out_path(out: str | Path, flag: str = "--out") -> Path:
    """Fail early, in one line, if ``out`` cannot be a directory we write into."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise VaelensError(f"{flag} {out} is a file, not a directory; choose another {flag}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise VaelensError(f"{flag} {out} lies below {parent}, which is a file; choose another {flag}")
            break
    existing = out if out.exists() else next(p for p in out.parents if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise VaelensError(
            f"cannot write into {existing} (permission denied); choose another {flag} or fix its permissions"
        )
    return out


def read_marker(out: Path) -> dict[str, Any] | None:
    path = out / MARKER
    return read_json(path) if path.is_file() else None


def claim_output(
    out: str | Path, command: str, config: dict[str, Any], overwrite: bool = False, files: list[str] | None = None
) -> Path:
    """Make ``out`` this command's output directory, before any computation; return it.

    The same command with the same config may write again (it resumes or repeats); anything else
    needs ``overwrite=True``, which first removes the files the previous owner recorded. ``files``:
    the names the command is about to write, recorded in the marker from the start, so that a
    rerun after a kill knows them for its own.
    """
    out = check_out_path(out)
    config = json_safe(config)
    marker = read_marker(out) if out.is_dir() else None
    if marker is not None:
        same = marker.get("command") == command and marker.get("config") == config
        empty = not marker.get("complete") and not any(p.name != MARKER for p in out.iterdir())
        if not same and not empty:  # a claim that wrote nothing (its command failed) is free to take
            if not overwrite:
                what = "with another config" if marker.get("command") == command else ""
                raise VaelensError(
                    f"{out} holds the output of `vaelens {marker.get('command')}` {what}".rstrip()
                    + "; choose another --out or pass --overwrite to replace it"
                )
            for name in marker.get("files", []):
                (out / name).unlink(missing_ok=True)
    elif out.is_dir() and any(p.name != MARKER for p in out.iterdir()) and not overwrite:
        raise VaelensError(
            f"{out} is not empty and was not written by `vaelens {command}`; choose another --out or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        planned = {"files": sorted(set(files))} if files is not None else {}
        write_json(out / MARKER, {"command": command, "config": config, "complete": False, **planned})
    except OSError as e:
        raise filesystem_error(e, out) from None
    return out


@contextlib.contextmanager
def released_if_refused(out: str | Path, marker: str = MARKER) -> Iterator[None]:
    """Claim ``out`` inside this block: if the command is refused there (a ``VaelensError``) and
    the claim's ``marker`` file did not exist before, a marker that is all ``out`` holds goes, and
    so does ``out`` itself if this block created it, so that a refused command leaves nothing on
    disk (an empty folder the user made stays, empty)."""
    out = Path(out)
    created, fresh = not out.exists(), not (out / marker).exists()
    try:
        yield
    except VaelensError:
        if fresh and out.is_dir() and [p.name for p in out.iterdir()] == [marker]:
            (out / marker).unlink()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def finish_output(out: str | Path, files: list[str] | None = None) -> None:
    """Record that the result in ``out`` is complete: the marker is the last file written."""
    out = Path(out)
    marker = read_marker(out) or {}
    names = sorted({*marker.get("files", []), *(files or [])})
    write_json(out / MARKER, {**marker, "complete": True, "files": names})


def is_complete(out: str | Path, command: str | None = None, config: dict[str, Any] | None = None) -> bool:
    """True when ``out`` holds a finished result (of ``command`` with ``config``, where given).

    A finished result of another config is not this result: whoever asks redoes it (and the
    claim then refuses to overwrite it without being told to).
    """
    out = Path(out)
    if not (out / MARKER).is_file():
        return False
    try:
        marker = read_json(out / MARKER)
    except VaelensError:
        return False
    return (
        marker.get("complete") is True
        and (command is None or marker.get("command") == command)
        and (config is None or marker.get("config") == json_safe(config))
    )


def filesystem_error(e: OSError, path: str | Path | None = None) -> VaelensError:
    """One line for a file-system fault: the path, what went wrong, what to do."""
    where = e.filename or path or "a file"
    fixes = {
        errno.EACCES: "permission denied; fix the permissions or choose another path",
        errno.EPERM: "operation not permitted; fix the permissions or choose another path",
        errno.EROFS: "the file system is read-only; choose a writable path",
        errno.ENOSPC: "the disk is full; free some space and run the same command again to resume",
        errno.EDQUOT: "the disk quota is exceeded; free some space and run the same command again",
        errno.ENOENT: "no such file or directory; check the path",
        errno.ENOTDIR: "a part of the path is a file, not a directory; choose another path",
        errno.EISDIR: "it is a directory where a file was expected; choose another path",
        errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    }
    fix = fixes.get(e.errno or 0, f"{e.strerror or e}; check the path and the disk")
    return VaelensError(f"cannot write or read {where}: {fix}")
