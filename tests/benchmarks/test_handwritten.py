"""The hand-written plain-PyTorch references (the bars pyrocompress's Pyro models are read against)
train and report on the 8x8 digits."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, out: Path, epochs: int) -> dict:
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--dataset", "digits", "--epochs", str(epochs),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_handwritten_bayesian_compression_reports_its_kept_architecture(tmp_path):
    res = _run("handwritten_bc.py", tmp_path / "bc.json", 10)
    assert res["dense_accuracy"] > 0.85
    assert [p["threshold"] for p in res["pruned"]] == [3.0, -3.0]
    for pruned in res["pruned"]:
        arch = pruned["architecture"]
        assert arch[-1] == 10 and 1 <= arch[0] <= 64 and arch[1] <= 300 and arch[2] <= 100
        weights = sum(a * b for a, b in zip(arch[:-1], arch[1:]))
        assert pruned["kept_weights"] == weights
        assert pruned["compression_weights"] == pytest.approx((64 * 300 + 300 * 100 + 100 * 10) / weights)
    # the stricter threshold keeps no more groups than the looser one
    assert all(a <= b for a, b in zip(res["pruned"][1]["architecture"], res["pruned"][0]["architecture"]))


@pytest.mark.slow
def test_handwritten_sparse_vd_reports_compression(tmp_path):
    res = _run("handwritten_sparse_vd.py", tmp_path / "svd.json", 10)
    # ten epochs on 1,400 images: the KL has already driven most weights out, well above chance
    assert res["accuracy"] > 0.3 and res["compression_weights"] > 2.0
    assert set(res["layers"]) == {"fc1", "fc2", "fc3"}
