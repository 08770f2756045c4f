"""Publishing a finished temporary file under its final name, with ordinary permissions."""
from __future__ import annotations

import os


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
