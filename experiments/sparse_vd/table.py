"""Print the Markdown table of docs/results.md section 7 from the JSON files in measured/.

    python experiments/sparse_vd/table.py
"""
from __future__ import annotations

import json
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
}


def _row(name: str, what: str, best_dense: float) -> str:
    d = json.loads((RESULTS / name).read_text())
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


if __name__ == "__main__":
    main()
