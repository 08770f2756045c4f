"""Self-compression benchmarks on Fashion-MNIST (issue 4 targets).

Three parts (``--parts``, default all):

* ``lenet300``: LeNet-300-100 trained with SVI; one-shot posterior-score pruning of single
  weights (``--score``, default SNR) at each of ``--sparsities`` (>= 0.95 = 20x), SVI
  fine-tuning ``--finetune-epochs`` with the deleted weights held at zero; test accuracy vs
  the dense Bayesian network (target: within 0.5 points at 95%, aiming at 98%), the
  compression ratio, and the posterior-guided bit widths with the accuracy after that
  quantisation.
* ``kernelnet``: kernelnet with ``--kernels`` (N=32) trained with SVI, then *iterative*
  self-compression (kernel norms, automatic per-layer threshold, tolerance
  ``--tolerance`` points); its deterministic twin, trained alike, is cut to the same
  number of kernels by kernel norm (no fine-tuning, and with ``--finetune-epochs``).
  Reports both accuracy losses (target: Bayesian <= 0.5 points, the twin losing more).
* ``latency``: LeNet-300-100 self-compressed at neuron level (iterative, automatic
  threshold), physically shrunk; CPU inference latency (median over ``--latency-repeats``)
  of the shrunk vs the dense posterior-mean network at several batch sizes, and the ratio.

Smoke run (tiny settings, to check it runs)::

    python benchmarks/bench_compress.py --limit 1500 --epochs 1 --finetune-epochs 1 --kernels 8 \
        --max-rounds 2 --latency-repeats 3 --sparsities 0.95

Full run (on a quiet machine)::

    python benchmarks/bench_compress.py --epochs 30 --finetune-epochs 5 --kernels 32 --max-rounds 6 \
        --sparsities 0.95 0.98 --latency-repeats 200 --json bench_compress.json
"""
from __future__ import annotations

import argparse
import time

import torch

from pyrocompress.data import load_dataset
from pyrocompress.infer import fit, fit_deterministic, make_guide, posterior_mean_network
from pyrocompress.infer.predictive import evaluate
from pyrocompress.nn import BayesianModel, build_model
from pyrocompress.prune import Masks, layer_shapes, self_compress, shrink
from pyrocompress.prune.compression import compression_report, measure_latency, posterior_scales


def _bayes(arch, data, args, guide="mean_field"):
    model = BayesianModel.from_module(arch, data.num_classes, prior=args.prior, dataset_size=len(data.train))
    g = make_guide(model, guide)
    t0 = time.perf_counter()
    fit(model, g, data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        device=args.device)
    return model, g, time.perf_counter() - t0


def _test(model, guide, data, args):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return evaluate(model, data.test, guide, num_samples=args.eval_samples)


def _fit_opts(args):
    return dict(lr=args.lr, batch_size=args.batch_size, device=args.device)


def part_lenet300(data, args):
    torch.manual_seed(args.seed)
    arch = build_model("mlp", data.input_shape, data.num_classes)
    model, guide, secs = _bayes(arch, data, args)
    dense = _test(model, guide, data, args)
    dense_net = posterior_mean_network(model, guide).cpu()
    print(f"[lenet300] dense Bayesian: accuracy {dense['accuracy']:.4f}  nll {dense['nll']:.4f}  "
          f"({secs:.0f} s training)")
    rows = []
    for sparsity in args.sparsities:
        t0 = time.perf_counter()
        res = self_compress(model, guide, data, score=args.score, structure="weight", iterative=False,
                            sparsity=sparsity, finetune_epochs=args.finetune_epochs, seed=args.seed,
                            eval_samples=args.eval_samples, fit_options=_fit_opts(args))
        m = _test(res.model, res.guide, data, args)
        rep = compression_report(res.net.cpu(), data.input_shape, reference=dense_net,
                                 scales={k: v.cpu() for k, v in posterior_scales(res.model, res.guide).items()},
                                 split=data.test, latency=False)
        row = {"part": "lenet300", "sparsity": sparsity, "accuracy": m["accuracy"], "nll": m["nll"], "ece": m["ece"],
               "dense_accuracy": dense["accuracy"], "delta_points": 100 * (m["accuracy"] - dense["accuracy"]),
               "compression_ratio": rep["compression_ratio"], "speedup": rep["speedup"],
               "bits": rep["bits"], "bits_compression_ratio": rep["bits_compression_ratio"],
               "quantized_accuracy": rep["quantized_accuracy"], "units": rep["units"],
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"[lenet300] sparsity {sparsity:.3f}: accuracy {m['accuracy']:.4f} ({row['delta_points']:+.2f} points)"
              f"  compression {rep['compression_ratio']:.1f}x  with bits {rep['bits_compression_ratio']:.1f}x "
              f"(bits {rep['bits']}, quantised accuracy {rep['quantized_accuracy']:.4f})  units {rep['units']}")
    return rows


def _cut_by_norm(net, layer: str, k: int):
    norms = net.get_submodule(layer).weight.detach().flatten(1).norm(dim=1)
    keep = torch.zeros_like(norms, dtype=torch.bool)
    keep[torch.topk(norms, k).indices] = True
    return shrink(net, masks=Masks.from_units({layer: keep}, layer_shapes(net))).net


def part_kernelnet(data, args):
    torch.manual_seed(args.seed)
    arch = build_model("kernelnet", data.input_shape, data.num_classes, kernels=args.kernels)
    twin = build_model("kernelnet", data.input_shape, data.num_classes, kernels=args.kernels)
    twin.load_state_dict(arch.state_dict())
    model, guide, _ = _bayes(arch, data, args, guide=args.guide)
    dense = _test(model, guide, data, args)
    t0 = time.perf_counter()
    res = self_compress(model, guide, data, score="norm", structure="kernel", iterative=True,
                        tolerance=args.tolerance, max_rounds=args.max_rounds, finetune_epochs=args.finetune_epochs,
                        seed=args.seed, eval_samples=args.eval_samples, fit_options=_fit_opts(args))
    comp = _test(res.model, res.guide, data, args)
    k = res.net.conv.out_channels
    print(f"[kernelnet] Bayesian N={args.kernels}: accuracy {dense['accuracy']:.4f} -> {k} kernels: "
          f"{comp['accuracy']:.4f} ({100 * (comp['accuracy'] - dense['accuracy']):+.2f} points; "
          f"{res.rounds} rounds, {res.stop_reason})")
    for row in res.history:
        print("   ", {key: (round(v, 4) if isinstance(v, float) else v) for key, v in row.items()})
    fit_deterministic(twin, data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                      device=args.device)
    twin = twin.cpu()
    twin_dense = evaluate(twin, data.test)["accuracy"]
    cut = _cut_by_norm(twin, "conv", k)
    twin_cut = evaluate(cut, data.test)["accuracy"]
    twin_ft = None
    if args.finetune_epochs:
        fit_deterministic(cut, data, epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size,
                          seed=args.seed, device=args.device)
        twin_ft = evaluate(cut.cpu(), data.test)["accuracy"]
    print(f"[kernelnet] deterministic twin: accuracy {twin_dense:.4f} -> cut to {k} kernels by norm: {twin_cut:.4f} "
          f"({100 * (twin_cut - twin_dense):+.2f} points)"
          + (f", fine-tuned {args.finetune_epochs} epochs: {twin_ft:.4f}" if twin_ft is not None else ""))
    return [{"part": "kernelnet", "kernels_before": args.kernels, "kernels_after": k,
             "bayes_dense_accuracy": dense["accuracy"], "bayes_compressed_accuracy": comp["accuracy"],
             "bayes_delta_points": 100 * (comp["accuracy"] - dense["accuracy"]), "twin_dense_accuracy": twin_dense,
             "twin_cut_accuracy": twin_cut, "twin_delta_points": 100 * (twin_cut - twin_dense),
             "twin_finetuned_accuracy": twin_ft, "rounds": res.rounds, "stop_reason": res.stop_reason,
             "history": res.history, "seconds": time.perf_counter() - t0}]


def part_latency(data, args):
    torch.manual_seed(args.seed)
    arch = build_model("mlp", data.input_shape, data.num_classes)
    model, guide, _ = _bayes(arch, data, args)
    dense_net = posterior_mean_network(model, guide).cpu()
    res = self_compress(model, guide, data, score="norm", structure="neuron", iterative=True,
                        tolerance=args.tolerance, max_rounds=args.max_rounds, finetune_epochs=args.finetune_epochs,
                        seed=args.seed, eval_samples=args.eval_samples, fit_options=_fit_opts(args))
    small = res.net.cpu()
    acc_dense = evaluate(dense_net, data.test)["accuracy"]
    acc_small = evaluate(small, data.test)["accuracy"]
    rows = []
    units = {n: m.out_features for n, m in small.named_children() if hasattr(m, "out_features")}
    print(f"[latency] neuron-shrunk LeNet-300-100 units {units}; posterior-mean accuracy {acc_dense:.4f} -> "
          f"{acc_small:.4f}")
    for batch in args.batch_sizes:
        t_dense = measure_latency(dense_net, data.input_shape, batch_size=batch, repeats=args.latency_repeats)
        t_small = measure_latency(small, data.input_shape, batch_size=batch, repeats=args.latency_repeats)
        rows.append({"part": "latency", "batch_size": batch, "dense_ms": 1e3 * t_dense, "shrunk_ms": 1e3 * t_small,
                     "ratio": t_dense / t_small, "units": units, "dense_accuracy": acc_dense,
                     "shrunk_accuracy": acc_small})
        print(f"[latency] batch {batch}: dense {1e3 * t_dense:.3f} ms, shrunk {1e3 * t_small:.3f} ms (median of "
              f"{args.latency_repeats}), ratio {t_dense / t_small:.2f}x")
    return rows


PARTS = {"lenet300": part_lenet300, "kernelnet": part_kernelnet, "latency": part_latency}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples (smoke runs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--prior", default="normal:0.1")
    p.add_argument("--guide", default="mean_field",
                   help="guide of the kernelnet (group_scale: one variance per kernel)")
    p.add_argument("--score", default="snr")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.95, 0.98])
    p.add_argument("--kernels", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.5)
    p.add_argument("--max-rounds", type=int, default=6)
    p.add_argument("--eval-samples", type=int, default=16)
    p.add_argument("--latency-repeats", type=int, default=100)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = p.parse_args()
    data = load_dataset(args.dataset, limit=args.limit, seed=args.seed)
    rows = []
    for part in args.parts:
        rows += PARTS[part](data, args)
    if args.json:
        from pyrocompress.runs import write_json

        write_json(args.json, {"args": vars(args), "rows": rows})
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
