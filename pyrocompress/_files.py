"""Files and folders that survive: atomic writes, bounded reads, output folders with a lock and a completion marker.

* :func:`atomic_write`: a temporary file in the target's folder, published by one rename, so a
  reader sees the old file or the whole new one, never a half-written one;
* :func:`read_bounded` / :func:`read_json`: inputs are checked against a size cap before they are
  read, and read no further than the cap;
* :class:`FolderLock`: one writer per output folder (``.pyrocompress.lock``, an ``flock`` the kernel
  releases when its process dies; the file names the holder: pid, host, command, start time);
* :func:`output_folder`: the checks every command makes before it works (the path is not a file,
  its parent is writable, it is not the source, it holds no other result unless ``overwrite``), then
  the lock; :func:`mark_complete` writes the ``COMPLETE`` marker, last, when a result is whole.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: locks fall back to the lock file's content
    fcntl = None  # type: ignore[assignment]

from .errors import LockedError, OutputError, PyrocompressError, TooLargeError, UserError

__all__ = ["atomic_write", "publish", "read_bounded", "read_json", "MAX_JSON_BYTES", "check_output_path",
           "FolderLock", "LOCK_NAME", "COMPLETE", "mark_complete", "read_complete", "clear_marker",
           "output_folder", "check_output_folder", "folder_entries", "remove_temporaries", "holder_info", "lock_holder", "describe_holder"]

#: the lock file of an output folder
LOCK_NAME = ".pyrocompress.lock"
#: the marker a command writes last, when the result in the folder is whole
COMPLETE = "COMPLETE"
#: JSON inputs (configs, metrics, records, lock files) larger than this are refused unread
MAX_JSON_BYTES = 32 << 20
#: files that mark a folder as a pyrocompress result (finished or not)
_RESULT_FILES = (COMPLETE, LOCK_NAME, "config.json", "metrics.json", "checkpoint.safetensors",
                 "train_state.safetensors", "study.json", "history.csv")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give ``tmp`` the mode a newly created file gets (0666 less the umask) and rename it to ``path``.

    ``tempfile.mkstemp``, which every atomic write here starts from, creates files readable by
    their owner only (0600); without this, results, checkpoints and downloads would stay
    unreadable to the rest of a team sharing a results folder.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a fresh temporary file beside ``path``, then publish it as ``path``.

    Readers see the old file or the whole new one, never a half-written one; if ``write`` raises
    (a full disk included), the temporary file is removed and the error propagates.
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


# ------------------------------------------------------------------ bounded reads
def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file",
                 error: type[PyrocompressError] = TooLargeError) -> bytes:
    """The bytes of ``path``, refused unread (``error``) when the file is larger than ``limit``.

    The size is checked first and at most ``limit + 1`` bytes are read, so a huge file (or one
    that grows while it is read) never fills the memory.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > limit:
        raise error(f"{what} {path} is {_size(size)}, more than a {what} can be ({_size(limit)}); "
                    "it is not what it is named")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{what} {path} grew beyond {_size(limit)} while it was read; it is not what it is named")
    return data


def read_json(path: str | os.PathLike, what: str = "JSON file", error: type[PyrocompressError] = UserError,
              limit: int = MAX_JSON_BYTES, expect: Optional[type] = dict) -> Any:
    """Parse a JSON file of at most ``limit`` bytes; its top level must be an ``expect`` (a dict by default).

    Every problem (too large, not UTF-8, not JSON, not an object) is one ``error`` naming the file.
    """
    raw = read_bounded(path, limit, what, error)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what} {path} is not valid JSON ({exc})") from None
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "an object ({...})", list: "a list ([...])"}.get(expect, expect.__name__)
        raise error(f"{what} {path} holds JSON {type(value).__name__}, not {kind}")
    return value


# ------------------------------------------------------------------ output folders
def check_output_path(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, creating nothing, that ``path`` can become a folder this process writes into.

    Refused (one :class:`~pyrocompress.errors.OutputError` naming ``flag``): ``path`` is a file,
    one of its parents is a file, or the nearest existing folder (``path`` itself or a parent) is
    not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is a file, not a folder; give a folder (new or one of pyrocompress's)")
    existing = path
    while not existing.exists():
        parent = existing.parent
        if parent == existing:
            break
        existing = parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"{flag} {path}: {existing} is a file, so no folder can be made below it; "
                          "give another path")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (its nearest existing parent {existing} is)"
        raise OutputError(f"{flag} {path} is not writable{where}; give a folder you can write to")
    return path


def holder_info(what: str = "") -> dict[str, Any]:
    """Who holds a lock: pid, host, command line, start time (what the lock file says)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
            "what": what, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_holder(info: dict) -> str:
    if not info:
        return "another process (it has not written its name yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('what') or 'pyrocompress'}: "
            f"{info.get('command')!r}, started {info.get('started')})")


def _flock_briefly(fd: int, tries: int = 5) -> None:
    """``flock(LOCK_EX | LOCK_NB)``, tried a few times: a reader checking the lock (:func:`lock_holder`)
    holds it shared for an instant."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.02)


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``FOLDER/.pyrocompress.lock``.

    The kernel drops the lock when its process dies (``kill -9`` included), so the next writer
    takes a dead process's lock over; a living holder makes :meth:`acquire` raise
    :class:`~pyrocompress.errors.LockedError` naming it (pid, host, command, start time), which the
    lock file records. Spawned worker processes do not inherit it. On a file system without
    ``flock`` the file's content decides: a holder on this host that is no longer running is taken
    over, any other holder refused.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: Optional[int] = None
        self.previous: dict = {}

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read(self) -> dict:
        try:
            return read_json(self.path, "lock file", limit=1 << 16)
        except (PyrocompressError, OSError):
            return {}

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
            try:
                if fcntl is None:
                    self._check_content_lock()
                else:
                    try:
                        _flock_briefly(fd)
                    except BlockingIOError:
                        info = self._read()
                        raise LockedError(f"{self.folder} is being written by {_describe_holder(info)}; wait for "
                                          f"it to finish or stop it (the lock of a process that died is taken "
                                          f"over automatically)") from None
                    except OSError as exc:
                        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                            raise
                        self._check_content_lock()
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            # the file may have been removed (and made again) by the holder releasing it meanwhile
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            self.previous = self._read()
            data = json.dumps(holder_info(self.what)).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise LockedError(f"could not lock {self.folder}: its lock file keeps changing")  # pragma: no cover

    def _check_content_lock(self) -> None:
        """Without ``flock``: refuse a holder that may still run (another host, or alive here)."""
        info = self._read()
        if not info or info.get("pid") == os.getpid():
            return
        if info.get("host") != socket.gethostname() or _pid_alive(int(info.get("pid", 0))):
            raise LockedError(f"{self.folder} is being written by {_describe_holder(info)} (this file system has "
                              f"no locks: if that process is gone, delete {self.path})")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(folder: str | os.PathLike) -> Optional[dict]:
    """Who is writing into ``folder`` now (what its lock file says), or None when no living process
    holds its lock. Reads only: works on read-only folders."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = FolderLock(folder)._read()
        if fcntl is None:
            pid = int(info.get("pid", 0) or 0)
            alive = info.get("host") != socket.gethostname() or (pid > 0 and _pid_alive(pid))
            return info if info and alive else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return info or {"pid": "?"}
        except OSError:
            return None
        return None
    finally:
        os.close(fd)


def describe_holder(info: dict) -> str:
    """``pid 123 on host (train: 'pyrocompress train ...', started ...)``."""
    return _describe_holder(info)


def mark_complete(folder: str | os.PathLike, what: str, **extra: Any) -> Path:
    """Write ``FOLDER/COMPLETE`` (atomically, last): the result in ``folder`` is whole."""
    info = {"what": what, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv), **extra}
    data = (json.dumps(info, indent=1, default=str) + "\n").encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(Path(folder) / COMPLETE, write)


def read_complete(folder: str | os.PathLike) -> Optional[dict]:
    """What ``FOLDER/COMPLETE`` says (None when there is no marker; ``{}`` when it is unreadable)."""
    path = Path(folder) / COMPLETE
    if not path.is_file():
        return None
    try:
        return read_json(path, "completion marker", limit=1 << 20)
    except (PyrocompressError, OSError):
        return {}


def clear_marker(folder: str | os.PathLike) -> None:
    """Remove the ``COMPLETE`` marker: what follows changes the result."""
    with contextlib.suppress(FileNotFoundError):
        (Path(folder) / COMPLETE).unlink()


def folder_entries(folder: Path) -> list[Path]:
    """The entries of ``folder`` except its lock file and temporary files of interrupted atomic writes."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name != LOCK_NAME and not _is_temporary(p))


def _is_temporary(path: Path) -> bool:
    """A temporary file of an atomic write (``.NAME.XXXXXXXX.tmp`` / ``.part``)."""
    return path.name.startswith(".") and path.name.endswith((".tmp", ".part"))


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete what interrupted atomic writes left below ``folder`` (never read: their targets are intact).

    Only for a folder this process holds the lock of: nobody else writes there.
    """
    removed = 0
    for path in Path(folder).rglob(".*"):
        if path.is_file() and _is_temporary(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed


def _is_within(inner: Path, outer: Path) -> bool:
    try:
        inner.relative_to(outer)
    except ValueError:
        return False
    return True


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _check_sources(path: Path, sources: Iterable[str | os.PathLike], flag: str) -> None:
    real = _resolved(path)
    for source in sources:
        src = _resolved(Path(source))
        if real == src or _is_within(src, real):
            raise OutputError(f"{flag} {path} is {'the source' if real == src else 'a folder holding the source'} "
                              f"{source}; a source is never written into: give another {flag}")


def _check_contents(path: Path, overwrite: bool, resume: bool, flag: str, resume_hint: str,
                    previous_holder: Optional[dict] = None) -> list[Path]:
    """Refuse a folder holding another result (see :func:`output_folder`); returns its entries."""
    entries = folder_entries(path)
    if not entries:
        return entries
    names = {p.name for p in entries}
    ours = bool(names & set(_RESULT_FILES)) or bool(previous_holder)
    done = read_complete(path)
    if not ours:
        shown = ", ".join(sorted(names)[:3]) + (" ..." if len(names) > 3 else "")
        raise OutputError(f"{flag} {path} holds files that are not a pyrocompress result ({shown}); give a new or "
                          "empty folder (nothing there is deleted, even with --overwrite)")
    if overwrite or (resume and done is None):
        return entries
    if done is not None:
        by = f" (`{done.get('command')}`, finished {done.get('finished_at')})" if done else ""
        raise OutputError(f"{flag} {path} holds a finished result{by}; give --overwrite to replace it, or another "
                          f"{flag}")
    hint = f" {resume_hint}," if resume_hint else ""
    raise OutputError(f"{flag} {path} holds an unfinished result (a command was interrupted there, or still runs);"
                      f"{hint} give --overwrite to start over, or another {flag}")


def check_output_folder(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                        sources: Iterable[str | os.PathLike] = (), flag: str = "--out", resume_hint: str = "") -> Path:
    """Every check of :func:`output_folder` that needs no lock, creating and deleting nothing: what a
    command runs before it loads anything, so a wrong ``--out`` fails at once."""
    path = check_output_path(path, flag)
    _check_sources(path, sources, flag)
    if path.is_dir():
        holder = lock_holder(path)
        if holder:
            raise LockedError(f"{path} is being written by {_describe_holder(holder)}; wait for it to finish or "
                              "stop it")
        stale = FolderLock(path)._read() if (path / LOCK_NAME).exists() else None
        _check_contents(path, overwrite, resume, flag, resume_hint, stale or ({"stale": True} if stale == {} else None))
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, what: str, *, overwrite: bool = False, resume: bool = False,
                  sources: Iterable[str | os.PathLike] = (), flag: str = "--out",
                  resume_hint: str = "") -> Iterator[FolderLock]:
    """Check, lock and (with ``overwrite``) empty the output folder ``path``; yield its lock.

    Refused with a one-line :class:`~pyrocompress.errors.OutputError` before any work: ``path`` is
    a file or not writable (:func:`check_output_path`); it is (or holds) one of ``sources`` (the
    inputs are never written into); it holds a finished result, or an unfinished one, and neither
    ``overwrite`` nor (for an unfinished one) ``resume`` is set; it holds files that are not a
    pyrocompress result at all (even with ``overwrite``: nothing of the user's is deleted). A
    second writer gets :class:`~pyrocompress.errors.LockedError`. ``overwrite`` deletes the old
    result once the lock is held. The lock is released when the block ends, however it ends.
    """
    path = check_output_path(path, flag)
    _check_sources(path, sources, flag)
    created = not path.exists()
    lock = FolderLock(path, what)
    try:
        lock.acquire()
    except PermissionError as exc:
        raise OutputError(f"{flag} {path} is not writable ({exc.strerror}); give a folder you can write to") from None
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    try:
        entries = _check_contents(path, overwrite, resume, flag, resume_hint, lock.previous)
        remove_temporaries(path)
        if overwrite:
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        yield lock
    finally:
        lock.release()
        if created:  # a folder this call made and nothing was written into: leave no trace
            with contextlib.suppress(OSError):
                path.rmdir()
