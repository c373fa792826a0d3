"""Where built worlds live, and how an entry is built atomically and at most once at a time.

An entry is built in a temporary directory beside its target, a completion
marker is written last, and the directory is renamed into place; a directory
without the marker is never used. An ``fcntl`` lock per entry makes a second
process wait for the first and then reuse its result.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from auditor.errors import UserError
from auditor.files import CACHE_ENV

MARKER = "COMPLETE"


def ensure_writable(directory: Path) -> None:
    """Create ``directory`` or raise ``UserError`` saying why it cannot be used."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create cache directory {directory}: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"cache directory {directory} is not writable (set {CACHE_ENV} or pass another cache dir)")


def is_complete(entry: Path) -> bool:
    """Whether ``entry`` was fully built (its marker exists)."""
    return (entry / MARKER).is_file()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_entry(entry: Path, build: Callable[[Path], None]) -> bool:
    """Make ``entry`` complete, calling ``build(tmp_dir)`` unless it already is; return whether it built.

    Under the entry's lock, leftovers of interrupted builds (temporary
    directories, an entry without marker) are removed before building.
    """
    ensure_writable(entry.parent)
    with _locked(entry.parent / f"{entry.name}.lock"):
        if is_complete(entry):
            return False
        for stale in entry.parent.glob(f"{entry.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if entry.exists():
            shutil.rmtree(entry)
        tmp = Path(tempfile.mkdtemp(prefix=f"{entry.name}.tmp-", dir=entry.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the entry is an ordinary readable directory
        try:
            build(tmp)
            (tmp / MARKER).write_text("complete\n")
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True
