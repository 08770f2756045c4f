"""Reproduce "Self-Compression in Bayesian Neural Networks" (Carannante et al.) with pyrocompress.

kernelnet (one conv layer of N 5x5 kernels, ReLU, 2x2 max-pool, linear to 10) for each N,
trained as a Bayesian network (moment propagation, the paper's sampling-free eVI-style
method, and local reparameterization for comparison; one variance per kernel, as in eVI)
and as the vanilla deterministic network, for several seeds. For each trained network:

* test accuracy;
* the Frobenius norms of the kernels (posterior means for the Bayesian networks) and how many
  are near zero (below ``--near-zero`` times the largest);
* test accuracy as kernels are deleted in order of increasing norm (physically: the channel and
  its slice of the linear layer), without and with ``--finetune-epochs`` of fine-tuning;
* the iterative self-compression of the Bayesian networks (pyrocompress.prune.self_compress):
  final number of kernels and test accuracy.

Outputs (in ``--out``): ``trials.csv`` (one row per trained network), ``deletion.csv``,
``norms.csv``, ``summary.md`` (mean +- std over seeds), ``summary.json`` and figures
(``norm_hist_N*.png``, ``deletion_N*.png``). Every file is written atomically.

    python experiments/self_compression/run.py --config experiments/self_compression/config.toml
    python experiments/self_compression/run.py --kernels 8 --seeds 0 --epochs 1 --limit 600 --out /tmp/sc  # smoke
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch

import pyrocompress as pc
from pyrocompress.infer.fit import fit, fit_deterministic
from pyrocompress.infer.guides import posterior_mean_network
from pyrocompress.infer.predictive import evaluate
from pyrocompress.prune.masks import Masks, layer_shapes
from pyrocompress.prune.selfcompress import self_compress
from pyrocompress.prune.shrink import shrink
from pyrocompress.runs import atomic_write_bytes, write_csv, write_json
from pyrocompress.training import TrainConfig, train

METHODS = {
    # the paper's eVI rules: first-order (Taylor) ReLU and max-pooling moments
    "bayes_mp": {"estimator": "moment_propagation:relu=taylor,pool=argmax", "guide": "group_scale"},
    # exact rectified-Gaussian ReLU moments and Clark's max-pooling moments
    "bayes_mp_exact": {"estimator": "moment_propagation", "guide": "group_scale"},
    "bayes_lrt": {"estimator": "local_reparam", "guide": "group_scale"},
    # issue 13: a prior built to switch kernels off, Bayesian Compression's group horseshoe over the
    # kernels (a log-uniform output layer), with its recipe; it keeps this prior whatever --prior says
    "bayes_hs": {"estimator": "weight_sampling", "prior": {"default": "group_horseshoe", "output": "log_uniform"},
                 "kl_anneal_epochs": 5, "lr_schedule": "linear"},
    "vanilla": {"deterministic": True},
}


def kernel_norms(trained) -> torch.Tensor:
    if trained.model is not None:
        w = trained.guide.loc_of("conv.weight").detach()
    else:
        w = trained.net.conv.weight.detach()
    return w.flatten(1).norm(dim=1).cpu()


def delete_kernels(trained, order: torch.Tensor, k: int, data, finetune_epochs: int, seed: int, device):
    """Delete the k lowest-norm kernels physically; evaluate, then fine-tune and evaluate again."""
    n = order.numel()
    keep = torch.ones(n, dtype=torch.bool)
    keep[order[:k]] = False
    obj = trained.model if trained.model is not None else trained.net
    masks = Masks.from_units({"conv": keep}, layer_shapes(obj))
    if trained.model is not None:
        small = shrink(trained.model, trained.guide, masks=masks, warn=False)
        acc = evaluate(small.net, data.test)["accuracy"]
        acc_ft = None
        if finetune_epochs:
            fit(small.model, small.guide, data, epochs=finetune_epochs, seed=seed, device=device,
                estimator=trained.config.estimator)
            acc_ft = evaluate(posterior_mean_network(small.model, small.guide), data.test)["accuracy"]
    else:
        small = shrink(trained.net, masks=masks, warn=False)
        acc = evaluate(small.net, data.test)["accuracy"]
        acc_ft = None
        if finetune_epochs:
            fit_deterministic(small.net, data, epochs=finetune_epochs, seed=seed, device=device)
            acc_ft = evaluate(small.net, data.test)["accuracy"]
    return acc, acc_ft


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _figures(out: Path, norms_rows, deletion_rows, kernels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for n in kernels:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for method in METHODS:
            vals = [r["norm"] for r in norms_rows if r["kernels"] == n and r["method"] == method]
            if vals:
                ax.hist(vals, bins=30, alpha=0.5, label=method)
        ax.set_xlabel("kernel Frobenius norm (posterior mean for Bayesian)")
        ax.set_ylabel("kernels (all seeds)")
        ax.set_title(f"kernelnet N={n}: kernel norms")
        ax.legend()
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(out / f"norm_hist_N{n}.png", buf.getvalue())

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for method in METHODS:
            for key, style in (("accuracy", "-"), ("accuracy_finetuned", "--")):
                rows = [r for r in deletion_rows if r["kernels"] == n and r["method"] == method
                        and r.get(key) is not None]
                ks = sorted({r["deleted"] for r in rows})
                if not ks:
                    continue
                means = [statistics.fmean(r[key] for r in rows if r["deleted"] == k) for k in ks]
                ax.plot(ks, means, style, marker="o", label=f"{method}{' +ft' if key != 'accuracy' else ''}")
        ax.set_xlabel("kernels deleted (lowest norm first)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"kernelnet N={n}: deleting kernels by norm")
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(out / f"deletion_N{n}.png", buf.getvalue())


def run(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pc.infer.resolve_device(args.device)
    data = pc.load_dataset(args.dataset, args.data_dir, seed=0, limit=args.limit)
    trials, deletion_rows, norms_rows = [], [], []
    start = time.perf_counter()
    for seed in args.seeds:  # seeds outermost: an interrupted run still has every N for the first seeds
        for n in args.kernels:
            for method in args.methods:
                t0 = time.perf_counter()
                opts = dict(METHODS[method])
                if not opts.get("deterministic"):
                    opts.setdefault("prior", args.prior)
                cfg = TrainConfig(dataset=args.dataset, model="kernelnet", model_options={"kernels": n},
                                  epochs=args.epochs, lr=args.lr, seed=seed, device=str(device),
                                  eval_samples=args.eval_samples, limit=args.limit, **opts)
                trained = train(cfg, data=data)
                norms = kernel_norms(trained)
                acc = trained.metrics.get("mean_accuracy", trained.metrics["accuracy"])
                near_zero = int((norms < args.near_zero * norms.max()).sum())
                row = {"kernels": n, "seed": seed, "method": method, "test_accuracy": acc,
                       "predictive_accuracy": trained.metrics["accuracy"], "test_nll": trained.metrics["nll"],
                       "test_ece": trained.metrics["ece"], "near_zero_kernels": near_zero,
                       "train_seconds": trained.metrics["train_seconds"]}
                norms_rows += [{"kernels": n, "seed": seed, "method": method, "kernel": i, "norm": float(v)}
                               for i, v in enumerate(norms)]
                order = torch.argsort(norms)
                for frac in args.delete_fractions:
                    k = min(int(round(frac * n)), n - 1)
                    ft = args.finetune_epochs if frac in args.finetune_fractions else 0
                    a, a_ft = delete_kernels(trained, order, k, data, ft, seed, device)
                    deletion_rows.append({"kernels": n, "seed": seed, "method": method, "deleted": k,
                                          "fraction": frac, "accuracy": a, "accuracy_finetuned": a_ft})
                if trained.model is not None and args.iterative:
                    sc = self_compress(trained.model, trained.guide, data, score="norm", structure="kernel",
                                       iterative=True, tolerance=args.tolerance, max_rounds=args.max_rounds,
                                       finetune_epochs=args.finetune_epochs, seed=seed,
                                       fit_options={"estimator": opts["estimator"], "device": str(device),
                                                    "lr": args.lr})
                    row["iterative_kernels"] = int(sc.net.conv.out_channels)
                    row["iterative_accuracy"] = evaluate(sc.net, data.test)["accuracy"]
                    row["iterative_rounds"] = len(sc.history)
                    row["iterative_stop"] = sc.stop_reason
                row["seconds"] = time.perf_counter() - t0
                trials.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
                write_csv(out / "trials.csv", trials)
                write_csv(out / "deletion.csv", deletion_rows)
                write_csv(out / "norms.csv", norms_rows)

    seconds = time.perf_counter() - start
    header = (f"# Self-compression experiment ({args.dataset}, epochs {args.epochs}, seeds {args.seeds}, "
              f"prior {args.prior} (bayes_hs: the group horseshoe), limit {args.limit}, {seconds:.0f} s on {device})\n\n")
    summary = summarize(out, trials, deletion_rows, norms_rows, header, extra={"args": vars(args), "seconds": seconds})
    return {"trials": trials, "summary": summary, "seconds": seconds}


def summarize(out: Path, trials, deletion_rows, norms_rows, header: str, extra: dict | None = None) -> list[dict]:
    """Write summary.md / summary.json (mean +- std over the seeds present) and the figures."""
    kernels = sorted({r["kernels"] for r in trials})
    methods = [m for m in METHODS if any(r["method"] == m for r in trials)]
    summary = []
    lines = ["| N | method | seeds | test accuracy | near-zero kernels | iterative: kernels | iterative: accuracy "
             "| train s |",
             "|---|---|---|---|---|---|---|---|"]
    for n in kernels:
        for method in methods:
            rows = [r for r in trials if r["kernels"] == n and r["method"] == method]
            if not rows:
                continue
            acc = _mean_std([r["test_accuracy"] for r in rows])
            nz = _mean_std([r["near_zero_kernels"] for r in rows])
            ik = _mean_std([r.get("iterative_kernels") for r in rows])
            ia = _mean_std([r.get("iterative_accuracy") for r in rows])
            secs = _mean_std([r["train_seconds"] for r in rows])
            summary.append({"kernels": n, "method": method, "accuracy": acc, "near_zero": nz,
                            "iterative_kernels": ik, "iterative_accuracy": ia, "seeds": len(rows),
                            "train_seconds": secs})

            def fmt(ms, pct=False):
                if ms[0] is None:
                    return "-"
                return f"{100 * ms[0]:.2f} +- {100 * ms[1]:.2f}" if pct else f"{ms[0]:.1f} +- {ms[1]:.1f}"
            lines.append(f"| {n} | {method} | {len(rows)} | {fmt(acc, True)} | {fmt(nz)} | {fmt(ik)} | {fmt(ia, True)} "
                         f"| {secs[0]:.0f} |")
    lines.append("")
    lines.append("Deletion curves (mean test accuracy over seeds, lowest-norm kernels deleted first):")
    lines.append("")
    lines.append("| N | method | deleted | accuracy | after fine-tuning |")
    lines.append("|---|---|---|---|---|")
    fractions = sorted({r["fraction"] for r in deletion_rows})
    for n in kernels:
        for method in methods:
            for frac in fractions:
                rows = [r for r in deletion_rows if r["kernels"] == n and r["method"] == method
                        and r["fraction"] == frac]
                if not rows:
                    continue
                a = _mean_std([r["accuracy"] for r in rows])
                f = _mean_std([r["accuracy_finetuned"] for r in rows])
                lines.append(f"| {n} | {method} | {rows[0]['deleted']} | {100 * a[0]:.2f} +- {100 * a[1]:.2f} | "
                             + (f"{100 * f[0]:.2f} +- {100 * f[1]:.2f}" if f[0] is not None else "-") + " |")
    atomic_write_bytes(out / "summary.md", (header + "\n".join(lines) + "\n").encode())
    write_json(out / "summary.json", {**(extra or {}), "summary": summary})
    _figures(out, norms_rows, deletion_rows, kernels)
    print(header + "\n".join(lines))
    return summary


def _read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by this script, with numbers parsed back and empty cells as None."""
    def parse(value: str):
        if value == "":
            return None
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
        return value
    with open(path, newline="") as fh:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def summarize_existing(out: Path, sources: list[Path] | None = None) -> list[dict]:
    """Re-summarise the CSVs of earlier (possibly interrupted) runs: ``out`` itself, or the union of
    ``sources`` (e.g. runs of different seeds), whose merged CSVs are then written to ``out``."""
    sources = sources or [out]
    tables: dict[str, list[dict]] = {"trials.csv": [], "deletion.csv": [], "norms.csv": []}
    for src in sources:
        missing = [name for name in tables if not (src / name).is_file()]
        if missing:
            raise SystemExit(f"{src}: missing {missing}; run the experiment with --out {src} first")
        for name in tables:
            tables[name] += _read_csv(src / name)
    trials = tables["trials.csv"]
    seen = [(r["kernels"], r["seed"], r["method"]) for r in trials]
    duplicated = sorted({key for key in seen if seen.count(key) > 1})
    if duplicated:
        raise SystemExit(f"the runs overlap: (kernels, seed, method) {duplicated} appear more than once")
    out.mkdir(parents=True, exist_ok=True)
    if sources != [out]:
        for name, rows in tables.items():
            write_csv(out / name, rows)
    header = (f"# Self-compression experiment (re-summarised from {', '.join(str(s) for s in sources)}: "
              f"{len(trials)} trained networks, seeds {sorted({r['seed'] for r in trials})}, "
              f"{sum(r['seconds'] for r in trials):.0f} s of trials)\n\n")
    return summarize(out, trials, tables["deletion.csv"], tables["norms.csv"], header)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="TOML file whose keys are these options (dashes as underscores)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--kernels", type=int, nargs="+", default=[16, 32, 64, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--prior", default="normal", help="prior of the Bayesian networks, e.g. normal or normal:0.1")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--near-zero", type=float, default=0.1, help="near zero: norm below this fraction of the max")
    p.add_argument("--delete-fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9])
    p.add_argument("--finetune-fractions", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--iterative", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tolerance", type=float, default=0.5)
    p.add_argument("--max-rounds", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="results/self_compression")
    p.add_argument("--summarize-only", action="store_true",
                   help="only re-summarise the CSVs already in --out (e.g. of an interrupted run)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="with --summarize-only: merge the CSVs of these runs (e.g. different seeds) into --out")
    args = p.parse_args(argv)
    if args.config:
        cfg = tomllib.loads(Path(args.config).read_text())
        defaults = vars(p.parse_args([]))
        for key, value in cfg.items():
            key = key.replace("-", "_")
            if key not in defaults:
                p.error(f"{args.config}: unknown key {key!r}; valid keys: {sorted(defaults)}")
            if getattr(args, key) == defaults[key]:  # the command line wins over the file
                setattr(args, key, value)
    return args


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.summarize_only:
        summarize_existing(Path(parsed.out), [Path(d) for d in parsed.merge] if parsed.merge else None)
    else:
        run(parsed)
    sys.exit(0)
