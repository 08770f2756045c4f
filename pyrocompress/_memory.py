"""Sizes checked before they are allocated: a network, a checkpoint or a data file that would not fit is
refused with its estimated memory, instead of ending in an out-of-memory kill or a traceback."""
from __future__ import annotations

import os

from .errors import TooLargeError

__all__ = ["physical_memory", "check_memory", "human_bytes", "MEMORY_ENV"]

#: environment variable that sets the memory pyrocompress may plan for, in bytes (default: the machine's RAM)
MEMORY_ENV = "PYROCOMPRESS_MAX_MEMORY"


def physical_memory() -> int:
    """The memory a single pyrocompress process may plan for: ``$PYROCOMPRESS_MAX_MEMORY`` bytes, else
    the machine's physical memory (64 GiB where the platform does not say)."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        try:
            return max(int(float(env)), 1)
        except ValueError:
            raise TooLargeError(f"{MEMORY_ENV}={env!r} is not a number of bytes") from None
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 64 << 30


def human_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_memory(nbytes: float, what: str, hint: str = "") -> None:
    """Refuse (:class:`~pyrocompress.errors.TooLargeError`) ``what`` when it would need more than
    :func:`physical_memory`; the message gives the estimate, the limit and ``hint``."""
    limit = physical_memory()
    if nbytes > limit:
        raise TooLargeError(f"{what} would need about {human_bytes(nbytes)} of memory, more than the "
                            f"{human_bytes(limit)} here ({MEMORY_ENV} sets the limit){'; ' + hint if hint else ''}")
