"""Print the Markdown table of docs/results.md section 7 from the JSON files in measured/.

    python experiments/sparse_vd/table.py
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "measured"

#: file -> what the row is (in the order of the table)
ROWS = {
    "det60.json": "deterministic twin, 60 epochs",
    "det30.json": "deterministic twin, 30 epochs",
    "handwritten60.json": "hand-written plain-PyTorch sparse VD, 60 epochs",
    "svd60_recipe.json": "sparse_vd recipe (scales at the weights' rate, 1e-3), 60 epochs",
    "svd60_slr0.0005.json": "sparse VD, scale_lr 5e-4, 60 epochs",
    "svd60_slr0.002.json": "sparse VD, scale_lr 2e-3, 60 epochs",
    "svd60b.json": "sparse VD, scale_lr 1e-2 (the general default), 60 epochs",
    "svd60.json": "sparse VD, scale_lr 1e-2, 10% validation split, 60 epochs",
    "svd60_from30.json": "sparse VD from the 30-epoch twin, scale_lr 1e-2, 30 + 60 epochs",
    "bc60.json": "bayesian_compression recipe (group horseshoe, log-uniform output), 60 epochs",
    "bc60_gs1e-3.json": "the same, horseshoe global scale 1e-3 (recipe: 1e-5), 60 epochs",
    "bc60_gs1e-1.json": "the same, horseshoe global scale 1e-1, 60 epochs",
    "bcnj60.json": "bayesian_compression with the normal-Jeffreys group prior (group_log_uniform), 60 epochs",
    "handwritten_bc60.json": "hand-written plain-PyTorch Bayesian Compression (normal-Jeffreys per input neuron), 60 epochs",
}

#: the seeds of the sparse_vd recipe and of its twin (seed 0: the files above)
SEEDS = {0: ("svd60_recipe.json", "det60.json"), 1: ("svd60_recipe_s1.json", "det60_s1.json"),
         2: ("svd60_recipe_s2.json", "det60_s2.json")}


def _handwritten_bc_row(d: dict, what: str, best_dense: float) -> str:
    """benchmarks/handwritten_bc.py's JSON: the kept architecture at log alpha < 3."""
    kept = d["pruned"][0]
    arch = "-".join(str(a) for a in kept["architecture"])
    return "| " + " | ".join([f"{what} (kept: {arch})", str(d["epochs"]), f"{100 * d['dense_accuracy']:.2f}",
                               f"{100 * kept['accuracy']:.2f}", f"{kept['compression_weights']:.1f}x",
                               f"{100 * (kept['accuracy'] - best_dense):+.2f}", "-"]) + " |"


def _row(name: str, what: str, best_dense: float) -> str:
    d = json.loads((RESULTS / name).read_text())
    if "pruned" in d and isinstance(d["pruned"], list):
        return _handwritten_bc_row(d, what, best_dense)
    cfg = d.get("cfg") or {}
    epochs = d.get("epochs") or cfg.get("epochs")
    total = epochs + (30 if cfg.get("init_from") else 0)
    dense = d.get("metrics", {}).get("accuracy")
    if "pruned_accuracy" in d:
        pruned, ratio = d["pruned_accuracy"], d["compression_weights"]
    else:
        pruned, ratio = d.get("accuracy", dense), None
        if "compression_weights" in d:
            ratio = d["compression_weights"]
    move = (d.get("history_last") or {}).get("scale_move_median")
    units = ""
    layers = d.get("layers") or {}
    if name.startswith("bc") and layers:
        units = ", ".join(f"{k} {v['params']}" for k, v in layers.items())
    cells = [what, str(total),
             f"{100 * dense:.2f}" if dense is not None else "-",
             f"{100 * pruned:.2f}" if pruned is not None else "-",
             f"{ratio:.1f}x" if ratio else "-",
             f"{100 * (pruned - best_dense):+.2f}" if pruned is not None else "-",
             f"{move:.2f}" if move is not None else "-"]
    if units:
        cells[0] += f" (kept parameters per layer: {units})"
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    best = json.loads((RESULTS / "det60.json").read_text())["metrics"]["accuracy"]
    print("| run | total epochs | dense acc. % | after deletion % | weights compression | vs best dense (60-epoch twin) | "
          "median \\|log sigma/sigma0\\| |")
    print("|---|---|---|---|---|---|---|")
    for name, what in ROWS.items():
        if (RESULTS / name).is_file():
            print(_row(name, what, best))
    seeds_table()


def seeds_table() -> None:
    """The sparse_vd recipe against its own seed's 60-epoch twin, and the mean +- std over the seeds."""
    rows = []
    for seed, (svd, det) in SEEDS.items():
        if not ((RESULTS / svd).is_file() and (RESULTS / det).is_file()):
            continue
        s, t = json.loads((RESULTS / svd).read_text()), json.loads((RESULTS / det).read_text())
        rows.append((seed, t["metrics"]["accuracy"], s["metrics"]["accuracy"], s["pruned_accuracy"],
                     s["compression_weights"]))
    if not rows:
        return
    print()
    print("| seed | twin, 60 epochs % | sparse_vd dense % | after deletion % | weights compression | vs its twin |")
    print("|---|---|---|---|---|---|")
    for seed, twin, dense, pruned, ratio in rows:
        print(f"| {seed} | {100 * twin:.2f} | {100 * dense:.2f} | {100 * pruned:.2f} | {ratio:.1f}x | "
              f"{100 * (pruned - twin):+.2f} |")
    cols = list(zip(*rows))[1:]
    mean = [statistics.mean(c) for c in cols]
    std = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in cols]
    print(f"| mean +- std ({len(rows)} seeds) | {100 * mean[0]:.2f} +- {100 * std[0]:.2f} | "
          f"{100 * mean[1]:.2f} +- {100 * std[1]:.2f} | {100 * mean[2]:.2f} +- {100 * std[2]:.2f} | "
          f"{mean[3]:.1f}x +- {std[3]:.1f} | {100 * (mean[2] - mean[0]):+.2f} |")


if __name__ == "__main__":
    main()
