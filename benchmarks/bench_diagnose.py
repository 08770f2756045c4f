"""Benchmark: the whole ``diagnose`` of a LeNet-300-100 (266k weights, 784 inputs).

Without ``--run-dir`` it builds an untrained LeNet-300-100 for 1x28x28 inputs (the
Fashion-MNIST shape) and perturbs its guide (random locs, log-uniform scales spanning
SNR < 1 to SNR >> 1, some dead neurons), so nothing expensive is trained; with
``--run-dir`` it diagnoses a saved run. It prints the median seconds over ``--repeats``
of: loading the run (run-dir only), the in-memory diagnosis, and the full diagnosis
with NetCDF, CSV and figure writing, and the ratio to the 5 s target.

    python benchmarks/bench_diagnose.py --repeats 5 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch


def perturbed_lenet300(seed: int = 0):
    from pyrocompress.infer.guides import make_guide
    from pyrocompress.nn.model import BayesianModel
    from pyrocompress.nn.zoo import build_model

    torch.manual_seed(seed)
    model = BayesianModel.from_module(build_model("mlp", (1, 28, 28), 10), 10, prior="normal:0.1",
                                      dataset_size=60000)
    guide = make_guide(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, loc in guide.loc.items():
            loc.mul_(torch.empty(loc.shape[:1] + (1,) * (loc.dim() - 1)).uniform_(0, 2, generator=gen))
            if loc.dim() > 1:
                loc[: loc.shape[0] // 10].mul_(1e-3)  # a tenth of the neurons nearly dead
            rho = guide.rho[key]
            scale = torch.exp(torch.empty(rho.shape).uniform_(-9, -1, generator=gen))
            rho.copy_(scale + torch.log(-torch.expm1(-scale)))
    return model, guide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="diagnose this run instead of a perturbed LeNet-300-100")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target is 2 cores)")
    parser.add_argument("--group-draws", type=int, default=200)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    from pyrocompress.diagnostics import _arviz, diagnose
    from pyrocompress.runs import load_run

    _arviz.arviz()
    import matplotlib.figure  # noqa: F401
    print(f"imports (pyrocompress, arviz, matplotlib): {time.perf_counter() - t0:.2f} s (paid once per process)")

    load_times = []
    if args.run_dir:
        for _ in range(args.repeats):
            t = time.perf_counter()
            run = load_run(args.run_dir)
            load_times.append(time.perf_counter() - t)
        model, guide = run.model, run.guide
    else:
        model, guide = perturbed_lenet300()
    weights = sum(p.numel() for k, p in guide.loc.items() if k.endswith("weight"))
    print(f"model: {weights:,} weights in {len(model.bayes_layers())} Bayesian layers")

    mem, full = [], []
    diagnose(model, guide, draws=0, group_draws=args.group_draws)  # warm-up (lazy imports, caches)
    for _ in range(args.repeats):
        t = time.perf_counter()
        diagnose(model, guide, draws=0, group_draws=args.group_draws)
        mem.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            diagnose(model, guide, out_dir=tmp, draws=0, group_draws=args.group_draws, plots=not args.no_plots)
            full.append(time.perf_counter() - t)
    target = 5.0
    total = statistics.median(full) + (statistics.median(load_times) if load_times else 0.0)
    if load_times:
        print(f"load_run median: {statistics.median(load_times):.3f} s")
    print(f"diagnose in memory median: {statistics.median(mem):.3f} s over {args.repeats} repeats")
    print(f"diagnose with files median: {statistics.median(full):.3f} s over {args.repeats} repeats")
    print(f"total (load + diagnose with files) median: {total:.3f} s; ratio to the {target:.0f} s target: "
          f"{total / target:.2f}")


if __name__ == "__main__":
    main()
