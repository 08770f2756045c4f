"""The Ray executor on a real (local, one-node) cluster: `ray start --head` with token authentication, reached
as ray://HOST:PORT and HOST:PORT, relative and absolute study folders; fast one-line failures; clean shutdown.

The cluster is started and stopped by the test itself (`ray start --head --block` in its own session, stopped
by SIGTERM to that process: never `ray stop`, which would stop every Ray on the machine)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from pyrocompress.study.config import parse_config
from pyrocompress.study.executors import ClusterError, RayExecutor, _probe_folder, check_address, ray_available
from pyrocompress.study.runner import run_study

from conftest import TINY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not ray_available(), reason="the optional 'ray' package is not installed "
                                                             "(pip install -e '.[test]' installs it)")]

ONE_SEED = TINY.replace("seeds = [0, 1]", "seeds = [3]")
TIMING = ["seconds", "trial_seconds", "train_seconds", "latency_ms", "dense_latency_ms", "latency_speedup",
          "finished_at", "info"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _numbers(path):
    table = pd.read_csv(path / "results.csv").set_index("trial_id").sort_index()
    return table.drop(columns=[c for c in TIMING if c in table])


def _ray_processes(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a temp folder of ours)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _gone(marker: str, within: float = 60.0) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in _ray_processes(marker) if Path(f"/proc/{p}/stat").is_file()
                and Path(f"/proc/{p}/stat").read_text().split(") ")[-1][:1] != "Z"]
        if not left:
            return []
        time.sleep(0.5)
    return left


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node cluster with token authentication, as `ray start --head` makes one (2 CPUs, and 1 GPU as a
    logical resource: Ray places tasks by it without a physical GPU)."""
    if sys.platform != "linux":
        pytest.skip("the cluster test reads /proc")
    home = Path("/tmp") / f"pcrt-{uuid.uuid4().hex[:6]}"  # short: Ray's socket paths must fit 107 characters
    home.mkdir()
    token = home / "token"
    token.write_text(uuid.uuid4().hex)
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    gcs, client = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(gcs),
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(_free_port()),
           "--runtime-env-agent-port", str(_free_port()), "--num-cpus", "2", "--num-gpus", "1",
           "--include-dashboard=false",
           "--disable-usage-stats", "--temp-dir", str(home / "ray")]
    log = home / "ray.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield {"gcs": f"127.0.0.1:{gcs}", "client": f"ray://127.0.0.1:{client}", "token": str(token),
               "marker": str(home), "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert not _gone(str(home)), "the test's Ray cluster left processes behind"
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def token_env(cluster, monkeypatch):
    """The driver has the cluster's token (RAY_AUTH_TOKEN_PATH) but did not choose a mode: pyrocompress turns
    token mode on, as the cluster needs (Ray itself would retry until it times out)."""
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", cluster["token"])
    yield
    os.environ.pop("RAY_AUTH_MODE", None)


def test_a_study_through_the_ray_client_with_a_relative_folder_matches_the_local_executor(
        cluster, token_env, tmp_path, monkeypatch, capsys):
    from pyrocompress.cli import main

    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(ONE_SEED)
    run_study(parse_config(ONE_SEED), tmp_path / "local", progress=False)
    monkeypatch.chdir(tmp_path)  # --out relative to where the driver runs, resolved once, absolutely
    assert main(["study", str(cfg_path), "--executor", "ray", "--address", cluster["client"], "--out", "rel",
                 "--no-report", "--quiet"]) == 0
    assert f"-> {tmp_path / 'rel'}" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_numbers(tmp_path / "local"), _numbers(tmp_path / "rel"), check_exact=False,
                                  rtol=1e-9, atol=0)
    assert not list(Path(cluster["marker"]).rglob("runs")), "a worker wrote the study relative to its own folder"
    # resumes with the head's own address and an absolute folder: nothing left to run
    result = run_study(parse_config(ONE_SEED), tmp_path / "rel", executor="ray", address=cluster["gcs"],
                       progress=False)
    assert result.ok and result.ran == 0 and result.skipped == len(_numbers(tmp_path / "rel"))


def test_every_node_must_see_the_study_folder(cluster, token_env, tmp_path):
    with RayExecutor(cluster["gcs"]) as ex:
        assert not ex.is_local and ex.workers == 2
        ex.check_folder(tmp_path)  # one node, one file system: it sees it
        assert not list(tmp_path.iterdir())  # the probe is removed
    host, problem = _probe_folder(str(tmp_path), ".pyrocompress-probe-x")  # what a node without the folder says
    assert host and "is not there" in problem


def test_jobs_ask_for_their_gpus_and_fractions_share_one(cluster, token_env):
    import ray

    gpu_ids = lambda payload: (payload, list(ray.get_gpu_ids()))  # noqa: E731 - pickled by value for the workers
    with RayExecutor(cluster["gcs"], gpus=0.5) as ex:
        got = {p: r for p, r, e in ex.map_unordered(gpu_ids, [1, 2])}
    assert {p: ids for p, (_, ids) in got.items()} == {1: [0], 2: [0]}  # half a GPU each: both on GPU 0
    with RayExecutor(cluster["gcs"]) as ex:  # a CPU study asks for none
        assert [r[1] for _, r, _ in ex.map_unordered(gpu_ids, [3])] == [[]]
    with pytest.raises(ClusterError, match="asks for 2 GPU but the Ray cluster at .* has 1"):
        RayExecutor(cluster["gcs"], gpus=2)


def test_a_wrong_address_fails_at_once_in_one_line(capsys, tmp_path, tiny_toml):
    from pyrocompress.cli import main

    port = _free_port()  # nothing listens there
    with pytest.raises(ClusterError, match=rf"cannot reach the Ray cluster at ray://127.0.0.1:{port} within 2 s"):
        RayExecutor(f"ray://127.0.0.1:{port}", connect_timeout=2)
    assert main(["study", str(tiny_toml), "--executor", "ray", "--address", f"127.0.0.1:{port}",
                 "--connect-timeout", "1", "--out", str(tmp_path / "s"), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyrocompress study: error: cannot reach the Ray cluster") and "\n" not in err
    assert check_address("ray://head:10001") == "ray://head:10001" and check_address("local") is None
    with pytest.raises(ValueError, match="not a Ray address"):
        check_address("http://head")


def _driver(tmp_path, out, extra="", config=ONE_SEED):
    script = (f"import sys; from pyrocompress.cli import main; "
              f"sys.exit(main(['study', {str(tmp_path / 'tiny.toml')!r}, '--executor', 'ray', '--workers', '2', "
              f"'--out', {str(out)!r}, '--quiet', '--no-report'{extra}]))")
    (tmp_path / "tiny.toml").write_text(config)
    tmp = tmp_path / "t"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR="/tmp", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, preexec_fn=_interruptible)


def _interruptible() -> None:
    """The driver starts as from a terminal, with SIGINT at its default and unblocked: an ignored or
    blocked SIGINT is inherited through fork and exec, and earlier tests of a full run may leave the
    test process so (the driver then never sees the Ctrl-C this test sends)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_trials(proc, out, count=1, within=240.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (out / "trials").is_dir() and len(list((out / "trials").glob("*.json"))) >= count:
            return
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    pytest.fail("no trial finished in time")


def _local_instances() -> set[str]:
    return {str(p) for p in Path("/tmp").glob("pcray-*")}


def test_ctrl_c_prints_one_line_and_killing_the_driver_leaves_no_ray_process(tmp_path):
    # two seeds (12 trials): the interrupt must land while trials remain; with the one-seed study
    # the last of its 6 trials could finish first (the driver then exits 0, as it should)
    before = _local_instances()
    proc = _driver(tmp_path, tmp_path / "a", config=TINY)
    try:
        _wait_for_trials(proc, tmp_path / "a")
        (instance,) = _local_instances() - before
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.decode().splitlines() if line.strip()]
    finished = len(list((tmp_path / "a" / "trials").glob("*.json")))
    assert proc.returncode == 130, (proc.returncode, finished, err.decode()[-2000:])
    assert lines[-1].startswith("pyrocompress study: interrupted; finished trials are kept")
    assert "Traceback" not in err.decode()
    assert not _gone(instance), "Ctrl-C left Ray processes of the study behind"

    before = _local_instances()
    proc = _driver(tmp_path, tmp_path / "b")
    try:
        _wait_for_trials(proc, tmp_path / "b")
        (instance,) = _local_instances() - before
        proc.kill()  # SIGKILL: no cleanup of its own can run
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _gone(instance), "killing the driver left Ray processes of the study behind"
    assert json.loads(next((tmp_path / "b" / "trials").glob("*.json")).read_text())["status"] == "ok"
