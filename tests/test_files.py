"""Output folders: checks before work, one writer at a time (a lock naming its holder), completion markers,
bounded reads."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from pyrocompress._files import (COMPLETE, LOCK_NAME, FolderLock, check_output_folder, check_output_path,
                                 lock_holder, mark_complete, output_folder, read_bounded, read_json)
from pyrocompress.errors import LockedError, OutputError, PyrocompressError, RunError, TooLargeError


def _hold_lock_in_subprocess(folder, what="holder"):
    """A process that takes the folder's lock and waits (the test kills it)."""
    script = textwrap.dedent(f"""
        import sys, time
        from pyrocompress._files import FolderLock
        FolderLock({str(folder)!r}, {what!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout.readline().strip() == b"locked", proc.stderr.read().decode()
    return proc


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    folder = tmp_path / "out"
    proc = _hold_lock_in_subprocess(folder, "train")
    try:
        with pytest.raises(LockedError) as err:
            FolderLock(folder).acquire()
        message = str(err.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and "train" in message
        assert "started" in message
        assert lock_holder(folder)["pid"] == proc.pid
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            check_output_folder(folder)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    proc = _hold_lock_in_subprocess(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert (folder / LOCK_NAME).is_file()  # left behind by the kill
    assert lock_holder(folder) is None
    with FolderLock(folder, "mine") as lock:
        assert lock.previous["pid"] == proc.pid  # it knows whose lock it took over
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()  # released: no trace


def test_output_checks_happen_before_any_work_and_create_nothing(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_output_path(a_file)
    with pytest.raises(OutputError, match="is a file, so no folder can be made below it"):
        check_output_path(a_file / "sub" / "out")
    assert check_output_path(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()


def test_an_unwritable_output_is_named_before_work(tmp_path, monkeypatch):
    # tests may run as root, for whom every folder is writable: the permission check is simulated
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="not writable"):
        check_output_path(tmp_path / "out", flag="--out")


def test_a_folder_holding_a_result_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, "test"):
        (out / "metrics.json").write_text("{}")
        mark_complete(out, "test")
    with pytest.raises(OutputError, match="holds a finished result.*--overwrite"):
        check_output_folder(out)
    with pytest.raises(OutputError, match="holds a finished result"):
        with output_folder(out, "test"):
            pass
    assert (out / "metrics.json").is_file()
    with output_folder(out, "test", overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # the old result is gone
    # an unfinished result (no COMPLETE) is refused too, and may be resumed
    (out / "metrics.json").write_text("{}")
    with pytest.raises(OutputError, match="unfinished result.*--resume"):
        check_output_folder(out, resume_hint="continue it with --resume")
    assert check_output_folder(out, resume=True) == out


def test_files_that_are_not_a_result_are_never_deleted(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a pyrocompress result.*nothing there is deleted"):
            with output_folder(home, "test", overwrite=overwrite):
                pass
    assert (home / "thesis.tex").read_text() == "years of work"


def test_the_source_is_never_the_output(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    with pytest.raises(OutputError, match="is the source"):
        check_output_folder(run, sources=[run])
    with pytest.raises(OutputError, match="holding the source"):
        check_output_folder(tmp_path / "runs", overwrite=True, sources=[run])


def test_a_folder_made_for_nothing_is_removed(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_folder(out, "test"):
            raise RuntimeError("the command failed before writing")
    assert not out.exists()


def test_bounded_reads_refuse_large_and_malformed_json(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # a sparse 4 GiB file: nothing of it is read
        fh.truncate(4 << 30)
    with pytest.raises(TooLargeError, match="4.0 GiB"):
        read_bounded(big, 1 << 20, "configuration")
    with pytest.raises(RunError, match="4.0 GiB"):
        read_json(big, "run configuration", RunError)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="holds JSON list, not an object"):
        read_json(tmp_path / "list.json", "run configuration", RunError)
    (tmp_path / "bad.json").write_text("{bad")
    with pytest.raises(PyrocompressError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_complete_marker_is_written_last_and_says_what(tmp_path):
    mark_complete(tmp_path, "train", kind="bayesian")
    info = json.loads((tmp_path / COMPLETE).read_text())
    assert info["what"] == "train" and info["kind"] == "bayesian" and "finished_at" in info
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_concurrent_lockers_never_hold_the_lock_together(tmp_path):
    """Processes race for one folder; those that get the lock log their start and end: never two at once."""
    folder, log = tmp_path / "out", tmp_path / "log"
    script = textwrap.dedent(f"""
        import os, time
        from pyrocompress._files import FolderLock
        from pyrocompress.errors import LockedError
        for _ in range(8):
            try:
                with FolderLock({str(folder)!r}):
                    with open({str(log)!r}, "a") as fh:
                        fh.write(f"start {{os.getpid()}}\\n")
                    time.sleep(0.05)
                    with open({str(log)!r}, "a") as fh:
                        fh.write(f"end {{os.getpid()}}\\n")
            except LockedError:
                time.sleep(0.01)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(4)]
    assert all(p.wait() == 0 for p in procs)
    events = log.read_text().split("\n")[:-1]
    assert events, "no process ever got the lock"
    for i in range(0, len(events), 2):  # start A, end A, start B, end B, ...
        assert events[i].startswith("start") and events[i + 1] == "end" + events[i][len("start"):]
    assert not (folder / LOCK_NAME).exists()


def test_leftovers_of_interrupted_writes_are_swept_under_the_lock(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / ".config.json.k3j4h5.tmp").write_text("half")
    (out / "sub" / ".checkpoint.safetensors.abc.tmp").write_text("half")
    with output_folder(out, "test", resume=True):
        assert not list(out.rglob("*.tmp")) and (out / "config.json").is_file()
