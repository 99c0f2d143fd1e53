"""Durable file writes for the state: atomic replace, and the *errored* copy of a failed write.

A state write must never leave a torn file: the new bytes go to a temporary file in the same
directory, are fsynced, renamed over the target (atomic on POSIX), and the directory is
fsynced so the rename itself survives a power cut. When a write fails, the snapshot that could
not be stored is kept in an errored file (Terraform's ``errored.tfstate``): it records updates
that did land in HealthImaging, and without it their ``version_before`` — what rollback needs
— would be lost. The state holds only hashes and ids, so keeping a copy is safe; it is still
written 0600 because the salt makes hashes of low-entropy values guessable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
TEMP_SUFFIX = ".tmp"

# The rename step, separate so that tests can simulate a crash just before it.
_rename = os.replace


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and parents) with mode 0700; an existing one is left as it is."""
    if directory.is_dir():
        return
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)     # mkdir's mode is filtered by the umask


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path: Path, data: bytes | Iterable[str | bytes],
                 mode: int = FILE_MODE) -> tuple[int, str]:
    """Replace ``path`` with ``data`` (bytes, or pieces: str ones are written as UTF-8, one at
    a time, so that a large state is never whole in memory): temp file in the same directory,
    fsync, rename, fsync the directory. Readers see the old content or the new, never a mix.
    Returns how many bytes were written and their SHA-256 (hex), hashed as they went."""
    pieces = [data] if isinstance(data, bytes) else data
    sha, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                raw = piece.encode("utf-8") if isinstance(piece, str) else piece
                sha.update(raw)
                size += len(raw)
                handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        _rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size, sha.hexdigest()


def file_pieces(path: Path, size: int = 1 << 16) -> Iterator[bytes]:
    """The bytes of ``path``, ``size`` at a time (an atomic copy: ``atomic_write(dst,
    file_pieces(src))``)."""
    with open(path, "rb") as handle:
        while piece := handle.read(size):
            yield piece


def remove_stale_temps(path: Path) -> None:
    """Delete temp files a crashed writer left beside ``path``. Only call this while holding
    the write lock of that directory, when no other writer can be between mkstemp and rename."""
    for leftover in path.parent.glob(f"{temp_prefix(path)}*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def save_errored(data: bytes | Callable[[], Iterable[str | bytes]],
                 candidates: Iterable[Path]) -> Path | None:
    """Write ``data`` (bytes, or a callable making its pieces afresh for each attempt) to the
    first candidate path that accepts it; None when none does."""
    for candidate in candidates:
        try:
            ensure_dir(candidate.parent)
            atomic_write(candidate, data() if callable(data) else data)
            return candidate
        except OSError:
            continue
    return None
