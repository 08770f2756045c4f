"""Sizes of every export format of a trained LeNet-300-100 pruned to a few compression ratios.

Trains a Bayesian LeNet-300-100 (MLP 784-300-100-10) on Fashion-MNIST with the CLI, prunes it by
posterior SNR to each ratio (`pyrocompress prune --compression R --onnx --torchscript`), and
records, per ratio, the bytes of each file `prune` wrote beside the sizes its report claims
(dense fp32, CSR, CSR at the posterior-guided bit widths). Writes the JSON that
docs/compression.md quotes.

    python benchmarks/bench_export.py --out docs/export_sizes.json
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pyrocompress", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/export_sizes.json", help="JSON file to write")
    parser.add_argument("--epochs", type=int, default=3, help="SVI epochs of the Bayesian LeNet-300-100")
    parser.add_argument("--ratios", type=float, nargs="+", default=[4.0, 16.0, 64.0],
                        help="compression ratios to prune to")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    run = work / "lenet300"
    t0 = time.perf_counter()
    _cli("train", "--dataset", "fashion-mnist", "--model", "mlp", "--model-option", "hidden=[300,100]",
         "--epochs", str(args.epochs), "--batch-size", "128", "--lr", "1e-3", "--prior", "normal:1.0",
         "--seed", "0", "--out", str(run), "--quiet")
    rows = []
    for ratio in args.ratios:
        out = work / f"pruned-{ratio:g}x"
        _cli("prune", str(run), "--method", "bayes", "--score", "snr", "--compression", str(ratio),
             "--no-latency", "--onnx", "--torchscript", "--out", str(out), "--quiet")
        m = json.loads((out / "metrics.json").read_text())
        rows.append({"target_compression": ratio, "compression_ratio": m["compression_ratio"],
                     "accuracy": m["accuracy"], "dense_accuracy": m["dense"]["accuracy"],
                     "quantized_accuracy": m.get("quantized_accuracy"), "bits": m.get("bits"),
                     "nonzero_params": m["nonzero_params"], "params": m["params"],
                     "claimed_bytes": {k: m["bytes"][k] for k in ("dense", "csr", "bits") if k in m["bytes"]},
                     "file_bytes": m["export_bytes"]})
    result = {"command": "python benchmarks/bench_export.py " + " ".join(sys.argv[1:]),
              "network": "LeNet-300-100 (mlp hidden=[300,100]), Bayesian (normal:1.0 prior), Fashion-MNIST, "
                         f"{args.epochs} epochs, pruned by posterior SNR (weights)",
              "torch": torch.__version__, "python": platform.python_version(),
              "seconds": round(time.perf_counter() - t0, 1), "ratios": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
