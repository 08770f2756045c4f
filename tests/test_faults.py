"""Fault injection: kill -9 of train, of a study driver and of one worker at random points; concurrent
writers; a full disk. Each shows nothing lost, nothing duplicated, nothing half-written, and a rerun
that completes the work (docs/guarantees.md)."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pyrocompress._files import folder_entries
from pyrocompress.cli import main
from pyrocompress.errors import LockedError, RunError
from pyrocompress.runs import load_checkpoint, load_run, run_status
from pyrocompress.study.config import parse_config
from pyrocompress.study.runner import run_study
from pyrocompress.study.store import ResultsStore


def _study_fixtures():
    """The tiny study the study tests share (tests/study/conftest.py), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_study_conftest", Path(__file__).parent / "study" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TINY, module.TINY_TRIALS


TINY, TINY_TRIALS = _study_fixtures()

#: subprocesses killed at random points, whole (tiny) studies
pytestmark = pytest.mark.slow

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[48]", "--epochs", "8",
         "--batch-size", "32", "--lr", "0.01", "--lr-schedule", "cosine", "--patience", "4", "--eval-samples", "4",
         "--seed", "7", "--device", "cpu", "--quiet"]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pyrocompress", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return  # it finished first: the kill comes too late, which the tests accept
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


def _no_half_files(folder: Path) -> None:
    junk = [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith((".tmp", ".part"))]
    assert not junk, f"half-written files left: {junk}"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.safetensors")[0]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run every killed-and-resumed one must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    rc, _, err = _finish(_cli(*TRAIN, "--out", str(out)))
    assert rc == 0, err
    return out


# kill points: before the first epoch ended, right after an epoch's state, at a random moment
@pytest.mark.parametrize("when", ["before-first-epoch", "after-an-epoch", "random"])
def test_train_killed_at_any_point_resumes_to_the_same_run(reference_run, tmp_path, when):
    rng = random.Random(f"train-{when}")
    out = tmp_path / "run"
    proc = _cli(*TRAIN, "--out", str(out))
    state = out / "train_state.safetensors"
    if when == "before-first-epoch":
        _wait_for(lambda: (out / ".pyrocompress.lock").exists(), proc, "the lock")
    elif when == "after-an-epoch":
        _wait_for(state.exists, proc, "the first epoch's state")
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        _wait_for(lambda: (out / ".pyrocompress.lock").exists(), proc, "the lock")
        time.sleep(rng.uniform(0.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    if out.exists():
        _no_half_files(out)
    status = run_status(out)
    if status != "complete":  # killed in time: every command refuses the half-trained run, with the fix
        with pytest.raises(RunError, match="unfinished run.*--resume"):
            load_run(out)
        rc, _, err = _finish(_cli("evaluate", str(out)))
        assert rc == 2 and "--resume" in err and "Traceback" not in err
        if folder_entries(out):  # something was written: the same command without --resume is refused
            rc, _, err = _finish(_cli(*TRAIN, "--out", str(out)))
            assert rc == 2 and "unfinished result" in err and "--resume" in err
    rc, out_text, err = _finish(_cli(*TRAIN, "--resume", "--out", str(out)))
    if status == "complete":
        assert rc == 2 and "holds a finished result" in err
    else:
        assert rc == 0, err
    assert run_status(out) == "complete" and not (out / "train_state.safetensors").exists()
    assert not (out / ".pyrocompress.lock").exists()
    _no_half_files(out)
    a, b = _weights(reference_run), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"
    clocks = ["seconds", "val_seconds", "val_share"]  # wall-clock columns: the rest must be equal
    ref_history = pd.read_csv(reference_run / "history.csv").drop(columns=clocks, errors="ignore")
    pd.testing.assert_frame_equal(ref_history, pd.read_csv(out / "history.csv").drop(columns=clocks, errors="ignore"))


def test_two_trains_on_one_folder_never_mix(tmp_path):
    out = tmp_path / "run"
    first = _cli(*TRAIN, "--out", str(out))
    _wait_for(lambda: (out / ".pyrocompress.lock").exists(), first, "the first train's lock")
    if first.poll() is None:
        code = main(TRAIN[:-1] + ["--seed", "99", "--quiet", "--out", str(out), "--overwrite"])
        assert code == 2
    rc, _, err = _finish(first)
    assert rc == 0, err
    run = load_run(out)
    assert run.config["train"]["seed"] == 7 and run.metrics["epochs"] >= 1  # all of it the first train's


def _tiny_study_driver(out: Path, workers: int) -> subprocess.Popen:
    script = textwrap.dedent(f"""
        from pyrocompress.study.config import parse_config
        from pyrocompress.study.runner import run_study
        if __name__ == "__main__":
            run_study(parse_config({TINY!r}), {str(out)!r}, workers={workers}, progress=False)
    """)
    path = out.parent / "driver.py"
    path.write_text(script)
    return subprocess.Popen([sys.executable, str(path)], env=ENV, cwd=out.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _check_study(out: Path) -> None:
    rows = ResultsStore(out).rows()
    assert len(rows) == TINY_TRIALS and all(r["status"] == "ok" for r in rows)
    table = pd.read_csv(out / "results.csv")
    assert len(table) == TINY_TRIALS and table["trial_id"].is_unique and (table["status"] == "ok").all()
    assert not list(out.rglob("*.partial")) and not (out / ".pyrocompress.lock").exists()
    _no_half_files(out)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="watches worker processes through /proc")
def test_study_driver_killed_leaves_no_workers_and_resumes(tmp_path):
    out = tmp_path / "s"
    driver = _tiny_study_driver(out, workers=2)
    workers: list[int] = []
    try:
        _wait_for(lambda: (out / "runs").is_dir() and len(_children(driver.pid)) >= 3, driver, "the workers")
        rng = random.Random("driver")
        time.sleep(rng.uniform(0.5, 3.0))  # somewhere in training or trials
        workers = [p for p in _children(driver.pid) if "pyrocompress" in Path(f"/proc/{p}/cmdline").read_text()
                   or "multiprocessing" in Path(f"/proc/{p}/cmdline").read_text()]
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.communicate()
    deadline = time.monotonic() + 30  # a liveness deadline: workers notice their driver died
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers), "workers outlived their driver"
    before = {r["trial_id"]: r for r in ResultsStore(out).rows()} if (out / "trials").is_dir() else {}
    result = run_study(parse_config(TINY), out, progress=False)
    assert result.ok and result.ran == TINY_TRIALS - len(before)
    after = {r["trial_id"]: r for r in ResultsStore(out).rows()}
    assert all(after[t]["finished_at"] == r["finished_at"] for t, r in before.items())  # nothing redone
    _check_study(out)


def test_killing_one_worker_fails_nothing(tmp_path, monkeypatch):
    """An out-of-memory kill of one worker at a random moment: its job is retried, the study completes."""
    import multiprocessing

    out = tmp_path / "s"
    killed: list[int] = []
    rng = random.Random("worker")

    def assassin() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            busy = [p for p in multiprocessing.active_children() if p.name == "pyrocompress-worker"]
            if busy and (out / "runs").is_dir():
                time.sleep(rng.uniform(0.2, 2.0))
                victims = [p for p in multiprocessing.active_children() if p.name == "pyrocompress-worker"]
                if victims:
                    victim = rng.choice(victims)
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.append(victim.pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=assassin, daemon=True)
    thread.start()
    result = run_study(parse_config(TINY), out, workers=2, progress=False)
    thread.join()
    assert killed, "no worker was killed"
    assert result.ok, result.failed
    _check_study(out)


def test_two_study_drivers_on_one_folder_are_refused(tmp_path):
    out = tmp_path / "s"
    first = _tiny_study_driver(out, workers=1)
    try:
        _wait_for(lambda: (out / ".pyrocompress.lock").exists(), first, "the first driver's lock")
        if first.poll() is None:
            with pytest.raises(LockedError, match=rf"pid {first.pid} on .*study"):
                run_study(parse_config(TINY), out, progress=False)
    finally:
        _, err = first.communicate(timeout=900)
    assert first.returncode == 0, err.decode()[-2000:]
    _check_study(out)


# ----------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (where this process may mount one), else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        yield None
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill_until_enospc_after(monkeypatch, calls: int) -> list[int]:
    """Without a small file system: the n-th atomic write of a run finds the disk full."""
    import pyrocompress.runs as runs

    real = runs.atomic_write
    seen = [0]

    def write(path, fn, suffix=".tmp"):
        seen[0] += 1
        if seen[0] >= calls:
            def full(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    fh.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
            return real(path, full, suffix)
        return real(path, fn, suffix)

    monkeypatch.setattr(runs, "atomic_write", write)
    return seen


@pytest.mark.parametrize("disk", ["small file system", "simulated"])
def test_a_full_disk_leaves_nothing_half_written_and_resume_completes(disk, small_disk, tmp_path, monkeypatch,
                                                                      capsys):
    if disk == "small file system" and small_disk is None:
        pytest.skip("cannot mount a small tmpfs here (needs root); the simulated full disk runs instead")
    if disk == "simulated":
        small_disk = None
    args = ["train", "--dataset", "digits", "--model", "mlp", "--model-option", "hidden=[1024]", "--epochs", "3",
            "--limit", "300", "--eval-samples", "2", "--device", "cpu", "--quiet"]
    if small_disk is not None:
        out = small_disk / "run"
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (7 << 20))  # 7 of 8 MiB taken: the training state (about 1.9 MiB) cannot fit
    else:
        out = tmp_path / "run"
        filler = None
        _fill_until_enospc_after(monkeypatch, 3)
    assert main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    _no_half_files(out)
    assert not (out / "COMPLETE").exists() and not (out / ".pyrocompress.lock").exists()
    for name in ("config.json", "checkpoint.safetensors", "train_state.safetensors"):
        if (out / name).exists():  # whatever is there is whole
            json.loads((out / name).read_text()) if name.endswith(".json") else load_checkpoint(out / name)
    if filler is not None:
        filler.unlink()  # space freed
    else:
        monkeypatch.undo()
    assert main(args + ["--resume", "--out", str(out)]) == 0
    assert run_status(out) == "complete" and load_run(out).metrics["epochs"] == 3
    _no_half_files(out)


def test_a_full_disk_during_a_study_loses_no_record(tmp_path, monkeypatch):
    real = ResultsStore.record
    calls = [0]

    def record(self, row):
        calls[0] += 1
        if calls[0] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.trials_dir))
        return real(self, row)

    cfg = parse_config(TINY.replace("seeds = [0, 1]", "seeds = [0]"))
    monkeypatch.setattr(ResultsStore, "record", record)
    with pytest.raises(OSError, match="No space left"):
        run_study(cfg, tmp_path / "s", progress=False)
    monkeypatch.undo()
    kept = ResultsStore(tmp_path / "s").rows()
    assert len(kept) == 3 and ResultsStore(tmp_path / "s").unreadable() == []
    _no_half_files(tmp_path / "s")
    again = run_study(cfg, tmp_path / "s", progress=False)
    assert again.ok and again.ran == TINY_TRIALS // 2 - 3
    assert len(ResultsStore(tmp_path / "s").rows()) == TINY_TRIALS // 2
