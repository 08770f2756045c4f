"""Atomic file writes: a temporary file in the target's folder, published by one rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the mode a newly created file gets (0666 less the umask) and rename it to ``path``.

    ``tempfile.mkstemp``, which every atomic write here starts from, creates files readable by
    their owner only (0600); without this, results, checkpoints and downloads would stay
    unreadable to the rest of a team sharing a results folder.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then publish it as ``path``.

    Readers see the old file or the whole new one, never a half-written one; if ``write`` raises,
    the temporary file is removed and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
