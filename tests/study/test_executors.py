"""Executors: jobs run in this process or in worker processes; failures come back with their payload."""
import pytest
import torch

from pyrocompress.study.executors import EXECUTORS, LocalExecutor, make_executor, set_threads


def _square(x):
    if x == 3:
        raise RuntimeError("three")
    return x * x


def test_one_worker_runs_in_process_and_reports_each_failure():
    with make_executor("local", 1) as ex:
        out = {p: (r, e) for p, r, e in ex.map_unordered(_square, [1, 2, 3])}
    assert out[1] == (1, None) and out[2] == (4, None)
    assert out[3][0] is None and str(out[3][1]) == "three"


def test_worker_processes_give_the_same_results():
    with LocalExecutor(2) as ex:
        out = {p: r for p, r, e in ex.map_unordered(_square, [1, 2, 4]) if e is None}
    assert out == {1: 1, 2: 4, 4: 16}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="valid executors"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--address is for --executor ray"):
        make_executor("local", 1, address="auto")
    with pytest.raises(ValueError, match="positive integer"):
        LocalExecutor(0)
    assert EXECUTORS == ("local", "ray")


def test_set_threads_returns_the_previous_count():
    before = torch.get_num_threads()
    assert set_threads(1) == before
    assert set_threads(before) == 1


# ----------------------------------------------------------------- faults (issue 14)
def _die(payload):
    """A job that kills its own worker: ``victim`` once (then succeeds), ``always`` every time."""
    import os
    import signal

    marker, name = payload
    if name == "victim" and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    if name == "always":
        os.kill(os.getpid(), signal.SIGKILL)
    return name


def test_a_dead_worker_fails_only_its_own_job_after_one_retry(tmp_path):
    from pyrocompress.study.executors import WorkerDied

    marker = str(tmp_path / "died-once")
    payloads = [(marker, n) for n in ("a", "victim", "b", "always", "c", "d")]
    with LocalExecutor(2) as ex:
        out = {p[1]: (r, e) for p, r, e in ex.map_unordered(_die, payloads)}
    assert {n: r for n, (r, e) in out.items() if e is None} == {"a": "a", "b": "b", "c": "c", "d": "d",
                                                                 "victim": "victim"}
    assert isinstance(out["always"][1], WorkerDied)
    assert "died twice" in str(out["always"][1]) and "SIGKILL" in str(out["always"][1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not __import__("os").path.isdir("/proc"), reason="needs /proc to watch processes")
def test_workers_exit_when_the_driver_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    pids = tmp_path / "pids"
    pids.mkdir()
    script = textwrap.dedent(f"""
        import os, time
        from pyrocompress.study.executors import LocalExecutor

        def job(i):
            open(os.path.join({str(pids)!r}, str(os.getpid())), "w").close()
            time.sleep(600)

        if __name__ == "__main__":
            with LocalExecutor(2) as ex:
                list(ex.map_unordered(job, [1, 2]))
    """)
    (tmp_path / "driver.py").write_text(script)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py")], cwd=tmp_path,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        deadline = time.monotonic() + 120
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 30  # a liveness deadline, not a speed requirement
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers outlived their driver"


def test_threads_must_be_positive():
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        LocalExecutor(2, threads=0)


def test_a_lost_ray_connection_ends_the_study_in_one_line():
    """What RayExecutor.map_unordered does when the cluster itself fails (a stand-in for ray: no cluster)."""
    from pyrocompress.study.executors import ClusterError, RayExecutor

    class FakeRay:
        class exceptions:
            RayTaskError = type("RayTaskError", (Exception,), {})
            RaySystemError = type("RaySystemError", (Exception,), {})

        @staticmethod
        def wait(refs, num_returns):
            raise ConnectionError("GRPC client connection lost\ntraceback details")

    ex = RayExecutor.__new__(RayExecutor)  # the connection logic is tested on a real cluster (test_ray_cluster)
    ex._ray, ex.threads, ex._pending = FakeRay, 1, {}
    ex._remote = type("Remote", (), {"remote": staticmethod(lambda fn, p, threads: object())})
    with pytest.raises(ClusterError) as err:
        list(ex.map_unordered(_square, [1, 2]))
    assert str(err.value) == ("lost the Ray cluster: ConnectionError: GRPC client connection lost; finished trials "
                              "are kept, run the same command to resume")
