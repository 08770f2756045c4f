"""Where study jobs run: in this process, in a pool of local worker processes, or on a Ray cluster.

An executor runs a top-level function over JSON-able payloads and yields
``(payload, result, error)`` as each job finishes (in completion order), so the driver
records every result the moment it exists. Jobs are seeded by their payload, never by
where or in which order they run: 1 worker and N workers give the same numbers.

With ``workers > 1`` the pool *spawns* fresh interpreters, which import the calling script:
a script that starts a study must guard it with ``if __name__ == "__main__":``. Each worker
runs one job at a time. A worker that dies (an out-of-memory kill) fails only the job it was
running, which is retried once in a fresh worker (:class:`WorkerDied` if it dies again); the
other workers go on. Workers exit when the driver dies, ``kill -9`` included (Linux's
parent-death signal, and a watch of the parent process elsewhere).

Every job sets torch's intra-op threads to ``threads`` (default 1: the study's small
networks gain little from intra-op threads, and a fixed thread count keeps floating
point sums identical however many workers run).

Ray is an optional extra (``pip install pyrocompress[ray]``). ``RayExecutor`` connects
to ``address`` (``"auto"``, ``"ray://host:10001"``, or ``None`` / ``"local"`` for a new
local instance); the study directory must be on a file system every Ray node sees (the
trained networks are read from it), while the results store is written by the driver only.
"""
from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

from ..errors import UserError

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS", "ray_available",
           "set_threads", "WorkerDied"]

EXECUTORS = ("local", "ray")

Outcome = tuple[Any, Any, Optional[BaseException]]


def set_threads(threads: int) -> int:
    """Set torch's intra-op thread count; returns the previous value."""
    previous = torch.get_num_threads()
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
    return previous


def _call(fn: Callable, payload: Any, threads: int) -> Any:
    set_threads(threads)
    return fn(payload)


class WorkerDied(RuntimeError):
    """A worker process died while it ran a job (killed: out of memory, or by hand), twice."""


#: seconds between two looks of a worker at its parent (where the parent-death signal is not available)
PARENT_WATCH_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the driver ``parent_pid`` dies, however it dies."""
    if sys.platform.startswith("linux"):
        try:  # PR_SET_PDEATHSIG: the kernel kills this process when its parent dies
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the driver died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_WATCH_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _worker_main(conn, parent_pid: int, threads: int) -> None:
    """A worker: receive ``(index, fn, payload)``, send back ``(index, ok, result or exception)``."""
    _exit_with_parent(parent_pid)
    set_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, fn, payload = message
        try:
            reply = (index, True, fn(payload))
        except Exception as exc:  # noqa: BLE001 - sent to the driver with its job
            reply = (index, False, _sendable(exc))
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send((index, False, RuntimeError(f"the job's result cannot be sent back: {exc}")))
        except (EOFError, OSError):
            return


class _Worker:
    """One spawned worker process, its pipe, and the job it runs (None when idle)."""

    def __init__(self, context, threads: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, os.getpid(), threads), daemon=True,
                                       name="pyrocompress-worker")
        self.process.start()
        child.close()
        self.job: Optional[tuple[int, Any]] = None

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _death(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


class Executor:
    """Runs ``fn(payload)`` for each payload; yields ``(payload, result, exception)``."""

    name = "executor"
    workers = 1

    def map_unordered(self, fn: Callable, payloads: Iterable[Any]) -> Iterator[Outcome]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (idempotent)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class LocalExecutor(Executor):
    """One process (``workers=1``: jobs run in this process) or a pool of ``workers`` spawned processes."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int = 1) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise UserError(f"workers must be a positive integer, got {workers!r}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise UserError(f"threads must be a positive integer, got {threads!r}")
        self.workers = workers
        self.threads = threads
        self._pool: Optional[list[_Worker]] = None

    def map_unordered(self, fn: Callable, payloads: Iterable[Any]) -> Iterator[Outcome]:
        payloads = list(payloads)
        if self.workers == 1:
            previous = set_threads(self.threads)
            try:
                for p in payloads:
                    try:
                        yield p, fn(p), None
                    except Exception as exc:  # noqa: BLE001 - reported to the driver with its payload
                        yield p, None, exc
            finally:
                set_threads(previous)
            return
        yield from self._map_in_workers(fn, payloads)

    def _map_in_workers(self, fn: Callable, payloads: list) -> Iterator[Outcome]:
        """One job per worker at a time; a worker that dies fails (after one retry) only its own job."""
        context = multiprocessing.get_context("spawn")  # a clean interpreter (fork after torch init can deadlock)
        if not self._pool:
            self._pool = [_Worker(context, self.threads) for _ in range(self.workers)]
        queue = collections.deque(enumerate(payloads))
        deaths: dict[int, int] = {}
        while queue or any(w.job is not None for w in self._pool):
            for i, worker in enumerate(self._pool):
                if worker.job is not None or not queue:
                    continue
                if not worker.process.is_alive():
                    worker.stop(0.1)
                    worker = self._pool[i] = _Worker(context, self.threads)
                index, payload = queue.popleft()
                try:
                    worker.conn.send((index, fn, payload))
                except (pickle.PicklingError, TypeError, AttributeError) as exc:  # the payload cannot be sent
                    yield payload, None, exc
                    continue
                except OSError:  # the worker died meanwhile: the job goes back, a fresh worker takes it
                    queue.appendleft((index, payload))
                    continue
                worker.job = (index, payload)
            busy = [w for w in self._pool if w.job is not None]
            if not busy:
                continue
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                index, payload = worker.job
                if worker.conn.poll():
                    try:
                        _, ok, value = worker.conn.recv()
                    except (EOFError, OSError):
                        pass  # it died while sending: handled as a death below
                    else:
                        worker.job = None
                        yield (payload, value, None) if ok else (payload, None, value)
                        continue
                if worker.process.is_alive():
                    continue
                worker.process.join()
                how = _death(worker.process)
                worker.job = None
                deaths[index] = deaths.get(index, 0) + 1
                if deaths[index] == 1:  # once more, in a fresh worker
                    queue.appendleft((index, payload))
                else:
                    yield payload, None, WorkerDied(f"the worker process running this job died twice ({how})")

    def close(self) -> None:
        for worker in self._pool or []:
            worker.stop()
        self._pool = None


def ray_available() -> bool:
    """Whether the optional ``ray`` package imports."""
    try:
        # ray is optional and takes seconds to import: imported only when asked for
        import ray  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable"
        return False
    return True


class RayExecutor(Executor):
    """Jobs as Ray tasks (one CPU each) on the cluster at ``address``."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, threads: int = 1, workers: Optional[int] = None) -> None:
        if not ray_available():
            raise UserError("the Ray executor needs the optional 'ray' package: pip install 'pyrocompress[ray]' "
                             "(or use --executor local --workers N)")
        import ray  # optional (see ray_available)

        self._ray = ray
        self.threads = threads
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address not in (None, "", "local"):
                kwargs["address"] = address
            elif workers:
                kwargs["num_cpus"] = int(workers)
            # workers import pyrocompress from where the driver runs it
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}}
            ray.init(**kwargs)
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote = ray.remote(num_cpus=1)(_call)

    def map_unordered(self, fn: Callable, payloads: Iterable[Any]) -> Iterator[Outcome]:
        ray = self._ray
        refs = {self._remote.remote(fn, p, self.threads): p for p in payloads}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                p = refs.pop(ref)
                try:
                    yield p, ray.get(ref), None
                except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the job's exception
                    yield p, None, getattr(exc, "cause", None) or exc

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(name: str = "local", workers: int = 1, address: Optional[str] = None,
                  threads: int = 1) -> Executor:
    """An executor by name: ``local`` (``workers`` processes) or ``ray`` (cluster at ``address``)."""
    if name == "local":
        if address:
            raise UserError("--address is for --executor ray; the local executor runs on this machine")
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(address, threads, workers if workers > 1 else None)
    raise UserError(f"unknown executor {name!r}; valid executors: {list(EXECUTORS)}")
