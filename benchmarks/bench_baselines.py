"""Magnitude-pruning baselines on the deterministic LeNet-300-100 twin (Fashion-MNIST).

For each seed it trains the dense twin once (``--epochs``, the same optimiser, seed and
data order as SVI uses) and then, at every sparsity of ``--sparsities``:

* ``oneshot``: one-shot global magnitude pruning, no fine-tuning;
* ``oneshot_ft``: the same, fine-tuned with the budget IMP uses (equal total epochs);
* ``imp``: iterative magnitude pruning, ``--rounds`` rounds with ``--finetune-epochs`` each
  (Han et al. 2015; geometric schedule reaching the sparsity after the last round);
* ``lottery``: lottery-ticket IMP with rewinding to the initial weights (or to
  ``--rewind-epoch``), ``--rounds`` rounds, output layer at half rate, retraining
  ``--epochs`` epochs per round (Frankle & Carbin 2019).

Every row reports test accuracy, NLL, ECE, reached sparsity, compression ratio and
theoretical (FLOPs) speed-up from :func:`pyrocompress.prune.compression_report`, and the
budget (total epochs, seconds). The table shows medians over seeds and the accuracy
difference to one-shot. ``--json`` writes all rows.

Smoke run (a minute on a laptop CPU)::

    python benchmarks/bench_baselines.py --limit 2000 --epochs 1 --rounds 2 --finetune-epochs 1 --sparsities 0.9

Full run::

    python benchmarks/bench_baselines.py --epochs 20 --rounds 5 --finetune-epochs 2 \
        --sparsities 0.5 0.8 0.9 0.95 0.98 --seeds 0 1 2 --json bench_baselines.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections import defaultdict

import torch

from pyrocompress.data import load_dataset
from pyrocompress.infer import fit_deterministic
from pyrocompress.infer.predictive import evaluate
from pyrocompress.nn import build_model
from pyrocompress.prune import baselines as B
from pyrocompress.prune.compression import compression_report

METHODS = ("oneshot", "oneshot_ft", "imp", "lottery")


def _row(method: str, seed: int, sparsity: float, result: B.BaselineResult, dense, data) -> dict:
    m = evaluate(result.net, data.test)
    rep = compression_report(result.net, data.input_shape, reference=dense, latency=False)
    return {"method": method, "seed": seed, "target_sparsity": sparsity, "sparsity": result.sparsity,
            "accuracy": m["accuracy"], "nll": m["nll"], "ece": m["ece"],
            "compression_ratio": rep["compression_ratio"], "speedup": rep["speedup"],
            "epochs": result.budget.total_epochs, "seconds": result.budget.seconds}


def run(args: argparse.Namespace) -> list[dict]:
    data = load_dataset(args.dataset, args.data_dir, seed=0, limit=args.limit)
    fit = {"batch_size": args.batch_size, "lr": args.lr, "device": args.device}
    rows: list[dict] = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        init = build_model("mlp", data.input_shape, data.num_classes, hidden=(300, 100))
        dense = copy.deepcopy(init)
        res = fit_deterministic(dense, data, epochs=args.epochs, seed=seed, **fit)
        base = B.Budget()
        base.add_fit(res, "train")
        dense_acc = evaluate(dense, data.test)["accuracy"]
        rows.append({"method": "dense", "seed": seed, "target_sparsity": 0.0, "sparsity": 0.0,
                     "accuracy": dense_acc, "epochs": base.total_epochs, "seconds": base.seconds})
        print(f"seed {seed}: dense accuracy {dense_acc:.4f} after {args.epochs} epochs ({base.seconds:.1f} s)")
        opts = dict(fit, seed=seed)
        for s in args.sparsities:
            imp_epochs = args.rounds * args.finetune_epochs
            results = {
                "oneshot": lambda: B.one_shot(dense, s, scope="global", base_budget=base),
                "oneshot_ft": lambda: B.one_shot(dense, s, scope="global", data=data, finetune_epochs=imp_epochs,
                                                 fit_options=opts, base_budget=base),
                "imp": lambda: B.iterative_magnitude(dense, data, s, rounds=args.rounds,
                                                     finetune_epochs=args.finetune_epochs, scope="global",
                                                     seed=seed, fit_options=opts, base_budget=base),
                "lottery": lambda: B.lottery_ticket(init, data, sparsity=s, rounds=args.rounds,
                                                    train_epochs=args.epochs, rewind_epoch=args.rewind_epoch,
                                                    trained_state=dense.state_dict(), seed=seed, fit_options=opts,
                                                    base_budget=base),
            }
            for method in args.methods:
                if method == "oneshot_ft" and imp_epochs == 0:
                    continue
                t0 = time.perf_counter()
                row = _row(method, seed, s, results[method](), dense, data)
                rows.append(row)
                print(f"  {method:<10} s={s:<5} acc {row['accuracy']:.4f}  nll {row['nll']:.3f}  "
                      f"ratio {row['compression_ratio']:.1f}x  epochs {row['epochs']}  "
                      f"({time.perf_counter() - t0:.1f} s)")
    return rows


def summarize(rows: list[dict]) -> None:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["method"] != "dense":
            groups[(r["target_sparsity"], r["method"])].append(r)
    dense = statistics.median(r["accuracy"] for r in rows if r["method"] == "dense")
    print(f"\nmedians over seeds (dense accuracy {dense:.4f})")
    print(f"{'sparsity':>8} {'method':<10} {'acc':>7} {'d_acc_vs_oneshot':>16} {'nll':>7} {'ece':>6} "
          f"{'ratio':>7} {'speedup':>7} {'epochs':>6} {'seconds':>8}")
    for (s, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
        med = {k: statistics.median(r[k] for r in rs) for k in ("accuracy", "nll", "ece", "compression_ratio",
                                                                "speedup", "epochs", "seconds")}
        one = groups.get((s, "oneshot"))
        diff = med["accuracy"] - statistics.median(r["accuracy"] for r in one) if one else float("nan")
        print(f"{s:>8.3f} {method:<10} {med['accuracy']:>7.4f} {diff:>+16.4f} {med['nll']:>7.3f} {med['ece']:>6.3f} "
              f"{med['compression_ratio']:>7.1f} {med['speedup']:>7.1f} {med['epochs']:>6.0f} {med['seconds']:>8.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="use only the first N train/test examples")
    p.add_argument("--epochs", type=int, default=20, help="dense training epochs (and lottery retraining per round)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--finetune-epochs", type=int, default=2, help="IMP fine-tuning epochs per round")
    p.add_argument("--rewind-epoch", type=int, default=0)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.98])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write all rows to this file")
    args = p.parse_args()
    rows = run(args)
    summarize(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
