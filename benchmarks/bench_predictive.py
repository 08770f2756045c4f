"""Benchmark: the posterior predictive of a Bayesian CNN, by local reparameterization and by weight sampling.

A study evaluates every pruned Bayesian network on the test set (and on an OOD set), so the
predictive's cost decides how long a study of a CNN takes. Local reparameterization draws
independent pre-activations per example (two convolutions per layer: mean and variance, on
inputs repeated S times); weight sampling draws one weight tensor per sample and runs one plain
forward pass per draw, shared by the batch. Both give exact draws of each example's predictive.
Prints the median seconds over ``--repeats`` (side by side, same process), the ratio, and the
accuracy of the two predictives (they must agree within Monte Carlo noise).

    python benchmarks/bench_predictive.py --model lenet5 --examples 2000 --samples 8 --repeats 3
    python benchmarks/bench_predictive.py --run-dir results/lenet5/runs/fashion-mnist/lenet5/seed0/bayesian
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _model(args):
    from pyrocompress.infer.guides import make_guide
    from pyrocompress.nn.model import BayesianModel
    from pyrocompress.nn.zoo import build_model
    from pyrocompress.runs import load_run

    if args.run_dir:
        run = load_run(args.run_dir)
        return run.model, run.guide
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model(args.model, (1, 28, 28), 10), 10, prior="normal")
    return model, make_guide(model, init_scale=0.05)


def main(argv=None) -> dict:
    from pyrocompress.data import load_dataset
    from pyrocompress.infer.predictive import predictive_probs
    from pyrocompress.metrics import classification_metrics

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5", help="zoo model (without --run-dir): lenet5, kernelnet, mlp")
    p.add_argument("--run-dir", default=None, help="a trained Bayesian run instead of an untrained network")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--examples", type=int, default=2000, help="test examples predicted")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset, seed=0)
    x, y = data.test.x[: args.examples], data.test.y[: args.examples]
    model, guide = _model(args)
    times: dict[str, list[float]] = {"local_reparam": [], "weight_sampling": []}
    accuracy = {}
    for _ in range(args.repeats):
        for est in times:  # interleaved, so drifts of a shared machine hit both alike
            t0 = time.perf_counter()
            probs = predictive_probs(model, guide, x, num_samples=args.samples, estimator=est)
            times[est].append(time.perf_counter() - t0)
            accuracy[est] = classification_metrics(probs, y)["accuracy"]
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": args.run_dir or args.model, "examples": len(x), "samples": args.samples,
           "threads": args.threads, "median_seconds": med,
           "ratio_local_reparam_over_weight_sampling": med["local_reparam"] / med["weight_sampling"],
           "accuracy": accuracy}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
