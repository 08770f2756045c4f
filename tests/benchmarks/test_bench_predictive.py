"""benchmarks/bench_predictive.py --quick runs end to end and writes its JSON (no timing is checked)."""
import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_bench_predictive_quick_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_predictive", ROOT / "benchmarks" / "bench_predictive.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        out = bench.main(["--quick", "--no-memory", "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    written = json.loads((tmp_path / "r.json").read_text())
    assert set(written["predictive"]) == {"mlp", "kernelnet4"}
    for res in written["predictive"].values():
        assert {"deterministic", "floor", "weight_sampling", "local_reparam"} <= set(res["median_seconds"])
        assert set(res["ratio_to_S_deterministic"]) == {"floor", "weight_sampling", "local_reparam"}
        assert all(0.0 <= v <= 1.0 for v in res["kernel_share"].values())
    epoch = written["epochs"]["kernelnet4"]
    assert epoch["val_samples"] == 4 and 0.0 < epoch["val_share_bayesian"] < 1.0
    assert out["samples"] == 2
