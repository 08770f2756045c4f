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
to ``address`` (``"auto"``, ``"ray://host:10001"`` for the Ray client, ``"host:6379"``, or
``None`` / ``"local"`` for a new local instance that it stops again, :class:`LocalRay`),
within a short connect timeout, sending Ray's authentication token when one is at hand.
Each job asks for one CPU and ``gpus`` GPUs (fractions share a GPU). The study directory
must be on a file system every Ray node sees at the same absolute path (the trained
networks are read from it): :meth:`RayExecutor.check_folder` checks every node at the start,
while the results store is written by the driver only. A lost cluster raises
:class:`ClusterError` (one line); :meth:`Executor.close` cancels what is still queued.
"""
from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import math
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

from ..errors import UserError

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "LocalRay", "ClusterError", "make_executor", "EXECUTORS",
           "ray_available", "set_threads", "check_address", "check_gpus", "WorkerDied"]

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


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, no GPU, a node without the study folder) or was lost;
    the message is one line naming what to fix."""


_ADDRESS = re.compile(r"^(auto|ray://[^\s:/]+:\d{1,5}|[^\s:/]+:\d{1,5})$")


def check_address(address: Optional[str]) -> Optional[str]:
    """A Ray address as given to ``--address``: ``None`` / ``local`` (a new local instance), ``auto`` (the
    cluster started on this machine), ``ray://HOST:PORT`` (Ray client) or ``HOST:PORT`` (the head's GCS)."""
    if address in (None, "", "local"):
        return None
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise UserError(f"--address {address!r} is not a Ray address; give auto, ray://HOST:10001 (Ray client) or "
                         "HOST:6379 (the head node), or leave it out for a local instance")
    return address


def check_gpus(gpus: float) -> float:
    """GPUs per trial: a number >= 0; fractions share a GPU between trials (0.5: two per GPU)."""
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
        raise UserError(f"--gpus-per-trial must be a number >= 0 (fractions share a GPU), got {gpus!r}")
    return float(gpus)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalRay:
    """A Ray instance on this machine for one study: ``ray start --head --block`` in its own session.

    ``ray.init()`` leaves its dashboard and runtime-env agents running when the driver is killed;
    this head is stopped as a whole (its ``ray start`` process shuts every node process down on
    SIGTERM), by :meth:`stop` or, on Linux, by the kernel when the driver dies. Its own temp
    folder keeps it out of ``--address auto`` of other studies on the machine.
    """

    def __init__(self, cpus: Optional[int], gpus: Optional[float], timeout: float = 120.0) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="pcray-")  # short: Ray's socket paths must fit 107 characters
        self.port = _free_port()
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(self.port),
               "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
               "--runtime-env-agent-port", str(_free_port()), "--include-dashboard=false",
               "--disable-usage-stats", "--temp-dir", self.temp_dir]
        if cpus:
            cmd += ["--num-cpus", str(int(cpus))]
        if gpus is not None:
            cmd += ["--num-gpus", str(gpus)]
        self.log = Path(self.temp_dir) / "ray-start.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                self.stop()
                raise ClusterError(f"could not start a local Ray instance: {tail[0]}")
            time.sleep(0.2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop every process of this instance (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever outlived its ray start process (same session, same process group)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _token_available() -> bool:
    """Whether a Ray authentication token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


def _enable_token_auth() -> bool:
    """Ray >= 2.5x clusters started with a token require it; ``ray.init`` sends it for an explicit address only
    in token mode (it otherwise retries until it times out). Token mode when a token is at hand and the user
    did not choose (``RAY_AUTH_MODE=disabled`` opts out)."""
    if os.environ.get("RAY_AUTH_MODE") is None and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        _reload_ray_config()
        return True  # set for this connection only: close() takes it back (_disable_token_auth)
    return False


def _disable_token_auth() -> None:
    """Undo :func:`_enable_token_auth`: the process's environment (and Ray's cached configuration) as before."""
    os.environ.pop("RAY_AUTH_MODE", None)
    _reload_ray_config()


def _reload_ray_config() -> None:
    try:  # Ray caches its configuration at import: make it read the mode again (private, best effort)
        from ray._raylet import Config  # ray is optional (see ray_available)

        Config.initialize("")
    except Exception:  # noqa: BLE001 - older Ray versions have no token mode at all
        pass


def _reach(address: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds, in one line, when nothing listens at ``address``."""
    if address == "auto":
        return  # ray.init finds the local cluster's address itself, and fails at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise ClusterError(f"cannot reach the Ray cluster at {address} within {timeout:g} s ({why}); start it "
                           f"(ray start --head) or fix --address (--connect-timeout sets the wait)") from None


def _probe_folder(folder: str, name: str) -> tuple[str, str]:
    """On a Ray node: whether the study folder and the driver's probe file are there, and writable."""
    host = socket.gethostname()
    probe = Path(folder) / name
    if not probe.is_file():
        return host, f"{folder} is not there, or not the driver's folder (its probe file {name} is missing)"
    try:
        mine = Path(folder) / f"{name}.{host}.{os.getpid()}"
        mine.write_text("ok")
        mine.unlink()
    except OSError as exc:
        return host, f"{folder} is not writable ({exc.strerror or exc})"
    return host, ""


@contextlib.contextmanager
def _deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`ClusterError` when the block runs longer than ``seconds`` (main thread, POSIX only)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(*_):
        raise ClusterError(f"{what} took more than {seconds:g} s; check the address, the token "
                           "(RAY_AUTH_TOKEN / ~/.ray/auth_token) and that the cluster runs the same Ray version")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class RayExecutor(Executor):
    """Jobs as Ray tasks (one CPU, and ``gpus`` GPUs, each) on the cluster at ``address``.

    ``address``: None for a new local instance (:class:`LocalRay`), ``auto``, ``ray://HOST:PORT``
    or ``HOST:PORT``. Nothing listening there fails within ``connect_timeout`` seconds; the
    handshake after that within ``max(30, 3 * connect_timeout)``. A token of Ray's token
    authentication is sent when one is at hand (see :func:`_enable_token_auth`).
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, threads: int = 1, workers: Optional[int] = None, *,
                 gpus: float = 0.0, connect_timeout: float = 5.0) -> None:
        if not ray_available():
            raise UserError("the Ray executor needs the optional 'ray' package: pip install 'pyrocompress[ray]' "
                             "(or use --executor local --workers N)")
        if not (isinstance(connect_timeout, (int, float)) and connect_timeout > 0):
            raise UserError(f"--connect-timeout must be a positive number of seconds, got {connect_timeout!r}")
        import ray  # optional (see ray_available)

        self._ray = ray
        self.threads = threads
        self.gpus = check_gpus(gpus)
        self.address = check_address(address)
        self._local: Optional[LocalRay] = None
        self._connected = False
        self._pending: dict[Any, Any] = {}
        self._set_auth_mode = False
        if not ray.is_initialized():
            self._set_auth_mode = _enable_token_auth()
            if self.address is None:
                self._local = LocalRay(workers, None)
                target = self._local.address
            else:
                target = self.address
                _reach(target, connect_timeout)
            # workers import pyrocompress from where the driver runs it
            env = {"PYTHONPATH": os.pathsep.join(
                [os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
            # the instance started here may still be settling on a loaded machine: a few tries; a cluster the
            # user named gets one (its reachability was checked above)
            attempts = 3 if self._local is not None else 1
            for attempt in range(1, attempts + 1):
                try:
                    with _deadline(max(30.0, 3 * connect_timeout), f"connecting to the Ray cluster at {target}"):
                        ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR,
                                 runtime_env={"env_vars": env})
                    break
                except ClusterError:
                    self.close()
                    raise
                except Exception as exc:  # noqa: BLE001 - Ray raises many types for a failed connection
                    if attempt < attempts:
                        with contextlib.suppress(Exception):
                            ray.shutdown()
                        time.sleep(2.0 * attempt)
                        continue
                    self.close()
                    raise ClusterError(f"cannot connect to the Ray cluster at {target}: {type(exc).__name__}: "
                                       f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
            self._connected = True
        resources = ray.cluster_resources()
        self.workers = int(resources.get("CPU", 1))
        if self.gpus > 0 and resources.get("GPU", 0) < self.gpus:
            where = self.address or "the local instance"
            self.close()
            raise ClusterError(f"each trial asks for {self.gpus:g} GPU but the Ray cluster at {where} has "
                               f"{resources.get('GPU', 0):g}; run on device cpu or add GPU nodes")
        options: dict[str, Any] = {"num_cpus": 1}
        if self.gpus > 0:
            options["num_gpus"] = self.gpus
        self._remote = ray.remote(**options)(_call)

    @property
    def is_local(self) -> bool:
        """Whether the cluster is the instance this executor started on this machine."""
        return self._local is not None

    def check_folder(self, folder: str | os.PathLike, timeout: float = 120.0) -> None:
        """Fail in one line unless every alive Ray node sees the absolute ``folder`` and can write into it."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # ray is optional

        folder = Path(folder)
        name = f".pyrocompress-probe-{uuid.uuid4().hex}"
        (folder / name).write_text("the driver's probe; removed after the check")
        try:
            probe = ray.remote(num_cpus=0)(_probe_folder)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(folder), name) for n in nodes]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            if len(ready) < len(refs):
                raise ClusterError(f"not every Ray node answered within {timeout:g} s whether it sees the study "
                                   f"folder {folder}")
            for node, (host, problem) in zip(nodes, ray.get(refs)):
                if problem:
                    raise ClusterError(
                        f"Ray node {node.get('NodeManagerAddress', host)} ({host}) cannot use the study folder: "
                        f"{problem}. Put --out on a file system every node mounts at the same path (NFS, a cluster "
                        "file system)")
        finally:
            (folder / name).unlink(missing_ok=True)

    def map_unordered(self, fn: Callable, payloads: Iterable[Any]) -> Iterator[Outcome]:
        ray = self._ray
        task_error = getattr(ray.exceptions, "RayTaskError", ())
        refs = {self._remote.remote(fn, p, self.threads): p for p in payloads}
        self._pending = refs
        while refs:
            try:
                done, _ = ray.wait(list(refs), num_returns=1)
            except Exception as exc:  # noqa: BLE001 - the connection to the cluster itself failed
                raise ClusterError(f"lost the Ray cluster: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
                                   "finished trials are kept, run the same command to resume") from None
            for ref in done:
                p = refs.pop(ref)
                try:
                    yield p, ray.get(ref), None
                except task_error as exc:  # the job raised: its own exception
                    yield p, None, getattr(exc, "cause", None) or exc
                except (ConnectionError, getattr(ray.exceptions, "RaySystemError", ConnectionError)) as exc:
                    raise ClusterError(f"lost the Ray cluster: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
                                       "finished trials are kept, run the same command to resume") from None
                except Exception as exc:  # noqa: BLE001 - the worker died, the node was lost: this job failed
                    yield p, None, exc

    def close(self) -> None:
        """Cancel the jobs still queued or running, disconnect, and stop the local instance if one was started."""
        ray = self._ray
        for ref in list(self._pending):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished, or the cluster is gone
                pass
        self._pending = {}
        if self._connected:
            try:
                ray.shutdown()
            except Exception:  # noqa: BLE001 - a lost client connection cannot be closed more cleanly
                pass
            self._connected = False
        if self._local is not None:
            self._local.stop()
            self._local = None
        if getattr(self, "_set_auth_mode", False):  # the process's environment as it was before this executor
            _disable_token_auth()
            self._set_auth_mode = False


def make_executor(name: str = "local", workers: int = 1, address: Optional[str] = None,
                  threads: int = 1, gpus: float = 0.0, connect_timeout: float = 5.0) -> Executor:
    """An executor by name: ``local`` (``workers`` processes) or ``ray`` (cluster at ``address``, ``gpus``
    GPUs per job, ``connect_timeout`` seconds to find it)."""
    if name == "local":
        if address:
            raise UserError("--address is for --executor ray; the local executor runs on this machine")
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(address, threads, workers if workers > 1 else None, gpus=gpus,
                           connect_timeout=connect_timeout)
    raise UserError(f"unknown executor {name!r}; valid executors: {list(EXECUTORS)}")
