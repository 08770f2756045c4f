"""Each experiment script runs end to end with tiny arguments (digits, one epoch)."""
import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

#: the experiment scripts run end to end
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _run(args, tmp_path):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_self_compression_experiment_smoke(tmp_path):
    out = tmp_path / "sc"
    _run(["experiments/self_compression/run.py", "--dataset", "digits", "--kernels", "6", "--seeds", "0",
          "--epochs", "1", "--max-rounds", "2", "--delete-fractions", "0", "0.5", "--finetune-fractions", "0.5",
          "--prior", "normal:0.1", "--out", str(out)], tmp_path)
    rows = _rows(out / "trials.csv")
    assert {r["method"] for r in rows} == {"bayes_mp", "bayes_mp_exact", "bayes_lrt", "bayes_hs", "vanilla"}
    assert "prior normal:0.1" in (out / "summary.md").read_text()
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert (out / "summary.md").is_file() and (out / "norm_hist_N6.png").is_file()
    deletion = _rows(out / "deletion.csv")
    assert {int(r["deleted"]) for r in deletion} == {0, 3}
    # an interrupted run is re-summarised from its CSVs: the same table rows come back
    before = (out / "summary.md").read_text().splitlines()[1:]
    (out / "summary.md").unlink()
    _run(["experiments/self_compression/run.py", "--summarize-only", "--out", str(out)], tmp_path)
    assert (out / "summary.md").read_text().splitlines()[1:] == before
    proc = subprocess.run([sys.executable, "experiments/self_compression/run.py", "--summarize-only", "--out",
                           str(tmp_path / "nothing")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "missing" in proc.stderr
    # runs of different seeds merge into one summary; a run merged with itself is refused (it would count twice)
    _run(["experiments/self_compression/run.py", "--dataset", "digits", "--kernels", "6", "--seeds", "1",
          "--epochs", "1", "--methods", "vanilla", "--delete-fractions", "0", "--out", str(tmp_path / "s1")], tmp_path)
    _run(["experiments/self_compression/run.py", "--summarize-only", "--merge", str(out), str(tmp_path / "s1"),
          "--out", str(tmp_path / "merged")], tmp_path)
    merged = _rows(tmp_path / "merged" / "trials.csv")
    assert len(merged) == len(rows) + 1 and {r["seed"] for r in merged} == {"0", "1"}
    assert "| 6 | vanilla | 2 |" in (tmp_path / "merged" / "summary.md").read_text()
    proc = subprocess.run([sys.executable, "experiments/self_compression/run.py", "--summarize-only", "--merge",
                           str(out), str(out), "--out", str(tmp_path / "twice")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "overlap" in proc.stderr
