"""Where study jobs run: in this process, in a pool of local worker processes, or on a Ray cluster.

An executor runs a top-level function over JSON-able payloads and yields
``(payload, result, error)`` as each job finishes (in completion order), so the driver
records every result the moment it exists. Jobs are seeded by their payload, never by
where or in which order they run: 1 worker and N workers give the same numbers.

With ``workers > 1`` the pool *spawns* fresh interpreters, which import the calling script:
a script that starts a study must guard it with ``if __name__ == "__main__":``.

Every job sets torch's intra-op threads to ``threads`` (default 1: the study's small
networks gain little from intra-op threads, and a fixed thread count keeps floating
point sums identical however many workers run).

Ray is an optional extra (``pip install pyrocompress[ray]``). ``RayExecutor`` connects
to ``address`` (``"auto"``, ``"ray://host:10001"``, or ``None`` / ``"local"`` for a new
local instance); the study directory must be on a file system every Ray node sees (the
trained networks are read from it), while the results store is written by the driver only.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS", "ray_available",
           "set_threads"]

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
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.threads = threads
        self._pool: Optional[ProcessPoolExecutor] = None

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
        if self._pool is None:
            # spawn: a clean interpreter per worker (fork after torch/OpenMP initialisation can deadlock)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        pending: dict[Future, Any] = {}
        queue = list(payloads)
        # keep a bounded number of jobs in flight so finished results stream back promptly
        while queue or pending:
            while queue and len(pending) < 2 * self.workers:
                p = queue.pop(0)
                try:
                    pending[self._pool.submit(_call, fn, p, self.threads)] = p
                except BrokenProcessPool as exc:  # a worker died: report every job left, run none of them
                    for q in [p] + queue + list(pending.values()):
                        yield q, None, exc
                    self._pool = None
                    return
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in done:
                p = pending.pop(fut)
                try:
                    yield p, fut.result(), None
                except Exception as exc:  # noqa: BLE001 - includes a worker that died
                    yield p, None, exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
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
            raise ValueError("the Ray executor needs the optional 'ray' package: pip install 'pyrocompress[ray]' "
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
            raise ValueError("--address is for --executor ray; the local executor runs on this machine")
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(address, threads, workers if workers > 1 else None)
    raise ValueError(f"unknown executor {name!r}; valid executors: {list(EXECUTORS)}")
