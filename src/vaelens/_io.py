"""Atomic file writes and checked JSON reads: write a temporary file beside the target, then rename it into place.

An interrupted run therefore never leaves a half-written file under a final name. By default there
is no fsync: the guarantee is against interrupted processes (Ctrl-C, kills, crashes), not power
loss, and an fsync per epoch costs more than a small model's training step. ``durable=True`` (used
for checkpoints: the weights and the state.json that commits them) also fsyncs the file and its
directory, so that what it commits survives a power loss too.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vaelens._errors import VaelensError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


TMP_SUFFIX = ".tmp"  # a file ``.NAME.XXXX.tmp`` is a write in progress, or one a killed writer left


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink inside a directory durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None], durable: bool = False) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``.

    ``durable=True`` also fsyncs the file before the rename and the directory after it, so the
    write survives a power loss; checkpoints use it at their commit point.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temps(directory: str | Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Delete the temporary files a killed writer left in a directory; return them.

    ``names`` restricts this to the temporaries of those files (``.NAME.XXXX.tmp``), for a
    directory other processes may be writing into at the same time.
    """
    directory = Path(directory)
    patterns = [f".{n}.*{TMP_SUFFIX}" for n in names] if names is not None else [f".*{TMP_SUFFIX}"]
    found = [p for pattern in patterns for p in directory.glob(pattern)] if directory.is_dir() else []
    stale = [p for p in found if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock (flock) on ``path`` for the duration, or raise ``busy`` at once.

    The operating system releases the lock when its holder dies, even by kill -9.
    """
    f = open(path, "a+")  # held open for as long as the lock
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaelensError(busy) from None
        yield
    finally:
        f.close()


def fault_point(name: str) -> None:
    """A test hook: ``VAELENS_FAULT=name`` (or ``name@N``, the N-th time) kills this process here.

    With ``VAELENS_FAULT_ONCE=FILE`` it fires only where FILE does not exist yet, and creates it:
    a retried task then runs through.

    The fault-injection tests use it to land a kill -9 inside a window (a checkpoint between
    writing weights and committing them) that a random kill would rarely hit.
    """
    wanted, _, nth = os.environ.get("VAELENS_FAULT", "").partition("@")
    if wanted != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] < int(nth or 1):
        return
    once = os.environ.get("VAELENS_FAULT_ONCE")  # a file: the fault fires in the first process only
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


def write_text(path: str | Path, text: str, durable: bool = False) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, _write, durable)


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any, durable: bool = False) -> None:
    """Write JSON atomically. NaN and Inf, which JSON cannot hold, are written as null."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False)
    write_text(path, text + "\n", durable)


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: list[str]) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            for row in rows:
                writer.writerow(row)

    atomic_write(path, _write)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically as PNG."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, or raise a one-line error naming the file."""
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; check the path")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VaelensError(f"{path} is not valid JSON ({e}); restore it or write it again") from None
    if not isinstance(obj, dict):
        raise VaelensError(f"{path} must hold a JSON object; restore it or write it again")
    return obj
