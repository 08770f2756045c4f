"""A study killed in the middle resumes with no trial lost or duplicated; workers give the same numbers."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from pyrocompress.study.config import parse_config
from pyrocompress.study.executors import ray_available
from pyrocompress.study.runner import run_study
from pyrocompress.study.store import ResultsStore

from conftest import TINY, TINY_TRIALS

#: whole (tiny) studies, killed and resumed
pytestmark = pytest.mark.slow

TIMING = ["seconds", "trial_seconds", "train_seconds", "latency_ms", "dense_latency_ms", "latency_speedup",
          "finished_at"]


def _numbers(path):
    table = pd.read_csv(path / "results.csv").set_index("trial_id").sort_index()
    return table.drop(columns=[c for c in TIMING + ["info"] if c in table])


def test_killed_study_resumes_without_losing_or_duplicating(tmp_path, tiny_toml):
    out = tmp_path / "s"
    script = textwrap.dedent(f"""
        from pyrocompress.study.config import load_config
        from pyrocompress.study.runner import run_study
        run_study(load_config({str(tiny_toml)!r}), {str(out)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    trials = out / "trials"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            if trials.is_dir() and len(list(trials.glob("*.json"))) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"the study ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no trial finished within the deadline")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    before = {r["trial_id"]: r for r in ResultsStore(out).rows()}
    assert 3 <= len(before) < TINY_TRIALS
    result = run_study(parse_config(TINY), out, progress=False)
    assert result.ok and result.ran == TINY_TRIALS - len(before) and result.skipped == len(before)
    after = {r["trial_id"]: r for r in ResultsStore(out).rows()}
    assert len(after) == TINY_TRIALS
    for tid, row in before.items():  # finished trials were not run again
        assert after[tid]["finished_at"] == row["finished_at"]
    table = pd.read_csv(out / "results.csv")
    assert len(table) == TINY_TRIALS and table["trial_id"].is_unique and (table["status"] == "ok").all()
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.tmp"))


def test_two_workers_give_the_same_numbers_as_one(tmp_path):
    cfg = parse_config(TINY.replace("seeds = [0, 1]", "seeds = [3]"))
    one = run_study(cfg, tmp_path / "one", workers=1, progress=False)
    two = run_study(cfg, tmp_path / "two", workers=2, progress=False)
    assert one.ok and two.ok and one.ran == two.ran == TINY_TRIALS // 2
    a, b = _numbers(tmp_path / "one"), _numbers(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=0)


@pytest.mark.skipif(not ray_available(), reason="the optional 'ray' package is not installed "
                                                 "(pip install 'pyrocompress[ray]' to run this test)")
def test_ray_executor_on_a_local_instance_matches_local(tmp_path):
    import subprocess
    import sys

    text = TINY.replace("seeds = [0, 1]", "seeds = [3]")
    cfg = parse_config(text)
    local = run_study(cfg, tmp_path / "local", progress=False)
    # the Ray driver in a fresh interpreter: Ray keeps per-process state (its token, its configuration) that
    # another test's cluster in this process would leave behind
    (tmp_path / "tiny.toml").write_text(text)
    code = ("import sys; from pyrocompress.study.config import load_config; from pyrocompress.study.runner import "
            "run_study; r = run_study(load_config(sys.argv[1]), sys.argv[2], executor='ray', workers=2, "
            "progress=False); sys.exit(0 if r.ok else 1)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tiny.toml"), str(tmp_path / "ray")],
                          capture_output=True, text=True, timeout=600)
    assert local.ok and proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    pd.testing.assert_frame_equal(_numbers(tmp_path / "local"), _numbers(tmp_path / "ray"), check_exact=False,
                                  rtol=1e-9, atol=0)
