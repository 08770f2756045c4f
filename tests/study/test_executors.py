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
