"""Benchmark: the posterior predictive against the deterministic forward over the same inputs.

For each network (LeNet-300-100 ``mlp``, ``kernelnet`` with 32 and 100 kernels, ``lenet5``) on the
Fashion-MNIST test set (10,000 images), in one process, interleaved round by round so that drifts
of a shared machine hit every variant alike, it times:

* ``deterministic``: the posterior-mean network's forward over the set (``network_probs``);
* ``floor``: a hand-written weight-sampling predictive (S weight sets drawn with ``torch.randn``,
  ``torch.func.functional_call`` of the plain network, same batches): what plain PyTorch reaches;
* ``weight_sampling`` / ``local_reparam`` / ...: ``predictive_probs`` with that estimator.

It reports the median seconds, the ratio to ``S x deterministic`` (target: <= 1.3 for the
default predictive, weight sampling), the share of CPU time spent in the kernel (system time,
from ``getrusage``; target < 15%) and, measured in a fresh subprocess per case, the peak
resident memory of the evaluation (``VmHWM`` after resetting it with ``/proc/self/clear_refs``:
the process total and the increase over the loaded process; target: at most 2x the
deterministic evaluation's).

Optional cases: ``--cli-runs BAYES DET`` times ``pyrocompress evaluate RUN --samples S`` of a
Bayesian run against its deterministic twin (whole command, start-up included; target <= 6x);
``--epoch-models`` times one training epoch (validation included) of a Bayesian network trained
with weight sampling against the deterministic epoch (target <= 1.5x). ``--budgets`` sweeps the
memory budget of the predictive (how the default was chosen). ``--quick`` is a smoke test on the
8x8 digits.

    python benchmarks/bench_predictive.py --samples 16 --rounds 3 \\
        --cli-runs /tmp/kn32 /tmp/kn32det --cli-samples 32 --epoch-models kernelnet32,kernelnet100 \\
        --json benchmarks/results_predictive_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mlp": ("mlp", {}), "kernelnet32": ("kernelnet", {"kernels": 32}),
          "kernelnet100": ("kernelnet", {"kernels": 100}), "lenet5": ("lenet5", {})}
QUICK_MODELS = {"mlp": ("mlp", {"hidden": (32,)}), "kernelnet4": ("kernelnet", {"kernels": 4, "kernel_size": 3})}


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def _data(quick: bool, dataset: str):
    from pyrocompress.data import load_dataset

    return load_dataset("digits" if quick else dataset, seed=0)


def _build(name: str, data, quick: bool, init_scale: float, run_dir: Optional[str] = None):
    from pyrocompress.infer.guides import make_guide
    from pyrocompress.nn.model import BayesianModel
    from pyrocompress.nn.zoo import build_model
    from pyrocompress.runs import load_run

    if run_dir:
        run = load_run(run_dir)
        return run.model, run.guide
    zoo, options = (QUICK_MODELS if quick else MODELS)[name]
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model(zoo, data.input_shape, data.num_classes, **options),
                                      data.num_classes)
    return model, make_guide(model, init_scale=init_scale)


def _floor(model, guide, net, x: torch.Tensor, samples: int, batch: int) -> torch.Tensor:
    """Hand-written weight-sampling predictive: plain torch, no effect handlers."""
    from torch.func import functional_call

    sites = [(f"{name}.{site}", guide.loc_of(f"{name}.{site}").detach(), guide.scale_of(f"{name}.{site}").detach())
             for name, layer in model.bayes_layers() for site in layer.sites()]
    total = torch.zeros(x.shape[0], 0)
    with torch.no_grad():
        for _ in range(samples):
            params = {name: loc + scale * torch.randn_like(loc) for name, loc, scale in sites}
            for start in range(0, x.shape[0], batch):
                probs = F.softmax(functional_call(net, params, (x[start:start + batch],)), -1)
                if total.shape[1] == 0:
                    total = torch.zeros(x.shape[0], probs.shape[1])
                total[start:start + batch] += probs
    return total / samples


def _variants(model, guide, x, samples: int, estimators: list[str], budget: Optional[int]) -> dict[str, Callable]:
    from pyrocompress.infer.guides import posterior_mean_network
    from pyrocompress.infer.predictive import _leaf_sizes, network_probs, predictive_batch_size, predictive_probs

    net = posterior_mean_network(model, guide).eval()
    sizes = _leaf_sizes(net, net, x[:1])
    batch = predictive_batch_size(max(sizes), x.element_size(), x.shape[0], budget)
    out: dict[str, Callable] = {
        "deterministic": lambda: network_probs(net, x, memory_budget=budget),
        "floor": lambda: _floor(model, guide, net, x, samples, batch),
    }
    for est in estimators:
        out[est] = (lambda est=est: predictive_probs(model, guide, x, num_samples=samples, estimator=est,
                                                     memory_budget=budget))
    return out


def time_predictive(model, guide, x, samples: int, estimators: list[str], rounds: int,
                    budget: Optional[int] = None) -> dict:
    """Median seconds and kernel-time share of each variant, interleaved round by round."""
    for f in _variants(model, guide, x[:512], 1, estimators, budget).values():  # warm-up (allocator, lazy init)
        f()
    variants = _variants(model, guide, x, samples, estimators, budget)
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    user = {k: 0.0 for k in variants}
    system = {k: 0.0 for k in variants}
    for _ in range(rounds):
        for name, f in variants.items():
            u0, s0 = _cpu()
            t0 = time.perf_counter()
            f()
            seconds[name].append(time.perf_counter() - t0)
            u1, s1 = _cpu()
            user[name] += u1 - u0
            system[name] += s1 - s0
    med = {k: statistics.median(v) for k, v in seconds.items()}
    det = med["deterministic"]
    return {
        "median_seconds": med,
        "kernel_share": {k: system[k] / max(user[k] + system[k], 1e-12) for k in variants},
        "ratio_to_S_deterministic": {k: med[k] / (samples * det) for k in variants if k != "deterministic"},
        "ratio_to_floor": {k: med[k] / med["floor"] for k in estimators},
    }


# ------------------------------------------------------------------------ memory
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _memory_child(args) -> None:
    """Peak memory of one evaluation, in this fresh process: VmHWM reset after loading."""
    torch.set_num_threads(args.threads)
    data = _data(args.quick, args.dataset)
    x = data.test.x.clone()
    model, guide = _build(args.model_name, data, args.quick, args.init_scale)
    del data
    variant = args.memory_child
    f = _variants(model, guide, x, args.samples, [] if variant in ("deterministic", "floor") else [variant],
                  args.budget)[variant]
    import gc

    gc.collect()
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    f()
    print(json.dumps({"rss_before_mb": before / 1024, "peak_mb": _status_kb("VmHWM") / 1024,
                      "increase_mb": (_status_kb("VmHWM") - before) / 1024, "peak_reset": reset}))


def measure_memory(args, name: str, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", variant, "--model-name", name, "--samples", str(args.samples),
           "--threads", str(args.threads), "--dataset", args.dataset, "--init-scale", str(args.init_scale)]
    if args.quick:
        cmd.append("--quick")
    if args.budget:
        cmd += ["--budget", str(args.budget)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ CLI and epochs
def time_cli(bayes: str, det: str, samples: int, rounds: int, threads: int) -> dict:
    """Wall time of ``pyrocompress evaluate`` (start-up included), Bayesian run against its twin."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmds = {"bayesian": [sys.executable, "-m", "pyrocompress", "evaluate", bayes, "--samples", str(samples)],
            "deterministic": [sys.executable, "-m", "pyrocompress", "evaluate", det]}
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(rounds):
        for k, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            walls[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in walls.items()}
    return {"median_seconds": med, "ratio": med["bayesian"] / med["deterministic"], "samples": samples}


def time_epochs(name: str, data, quick: bool, rounds: int, val_samples: Optional[int]) -> dict:
    """One training epoch with validation: Bayesian (weight sampling) against deterministic."""
    from pyrocompress.infer.fit import fit, fit_deterministic
    from pyrocompress.infer.guides import make_guide
    from pyrocompress.nn.model import BayesianModel
    from pyrocompress.nn.zoo import build_model

    zoo, options = (QUICK_MODELS if quick else MODELS)[name]
    rows: dict[str, list[dict]] = {"deterministic": [], "bayesian": []}
    extra = {} if val_samples is None else {"val_samples": val_samples}
    for _ in range(rounds):
        torch.manual_seed(0)
        net = build_model(zoo, data.input_shape, data.num_classes, **options)
        rows["deterministic"].append(fit_deterministic(net, data, epochs=1, device="cpu").history[0])
        torch.manual_seed(0)
        model = BayesianModel.from_module(build_model(zoo, data.input_shape, data.num_classes, **options),
                                          data.num_classes)
        guide = make_guide(model)
        rows["bayesian"].append(fit(model, guide, data, epochs=1, estimator="weight_sampling", device="cpu",
                                    **extra).history[0])

    def med(kind: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in rows[kind])
    total = {k: med(k, "seconds") + med(k, "val_seconds") for k in rows}
    return {"train_seconds": {k: med(k, "seconds") for k in rows},
            "val_seconds": {k: med(k, "val_seconds") for k in rows},
            "epoch_seconds": total, "ratio": total["bayesian"] / total["deterministic"],
            "val_share_bayesian": med("bayesian", "val_seconds") / total["bayesian"],
            "val_samples": rows["bayesian"][0].get("val_samples")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=None, help="comma-separated: mlp, kernelnet32, kernelnet100, lenet5")
    p.add_argument("--estimators", default="weight_sampling,local_reparam")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-scale", type=float, default=0.05, help="guide scale of the untrained networks")
    p.add_argument("--budget", type=int, default=None, help="memory budget in bytes (default: the library's)")
    p.add_argument("--budgets", default=None, help="comma-separated MiB: sweep the budget (weight sampling)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--cli-runs", nargs=2, metavar=("BAYES", "DET"), default=None)
    p.add_argument("--cli-rounds", type=int, default=3)
    p.add_argument("--cli-samples", type=int, default=32, help="--samples of the evaluate command")
    p.add_argument("--epoch-models", default=None, help="comma-separated models for the training-epoch case")
    p.add_argument("--epoch-rounds", type=int, default=1)
    p.add_argument("--val-samples", type=int, default=None, help="fit's val_samples (default: fit's)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="smoke test: digits, small networks, 2 samples, 1 round")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-name", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        _memory_child(args)
        return {}
    if args.quick:
        args.samples, args.rounds, args.cli_rounds = min(args.samples, 2), 1, 1
        args.epoch_models = args.epoch_models or "kernelnet4"
    torch.set_num_threads(args.threads)
    names = [n for n in (",".join(QUICK_MODELS if args.quick else MODELS) if args.models is None
                         else args.models).split(",") if n]
    estimators = [e for e in args.estimators.split(",") if e]
    data = _data(args.quick, args.dataset)
    x = data.test.x
    load = os.getloadavg()
    out: dict = {"device": "cpu", "threads": args.threads, "torch": torch.__version__, "samples": args.samples,
                 "examples": int(x.shape[0]), "rounds": args.rounds, "load_average_at_start": load,
                 "argv": sys.argv[1:] if argv is None else list(argv), "predictive": {}}
    for name in names:
        model, guide = _build(name, data, args.quick, args.init_scale)
        res = time_predictive(model, guide, x, args.samples, estimators, args.rounds, args.budget)
        if not args.no_memory:
            res["memory"] = {v: measure_memory(args, name, v) for v in ["deterministic", *estimators]}
            det = res["memory"]["deterministic"]
            res["memory_ratio"] = {v: {"peak": m["peak_mb"] / det["peak_mb"],
                                       "increase": m["increase_mb"] / max(det["increase_mb"], 1e-9)}
                                   for v, m in res["memory"].items() if v != "deterministic"}
        out["predictive"][name] = res
        r, k = res["ratio_to_S_deterministic"], res["kernel_share"]
        print(f"{name}: deterministic {res['median_seconds']['deterministic']:.3f} s; "
              + "; ".join(f"{v} {res['median_seconds'][v]:.2f} s = {r[v]:.2f} x S x det (kernel {k[v]:.0%})"
                          for v in ["floor", *estimators])
              + ("; peak memory vs det " + ", ".join(f"{v} {m['peak']:.2f}x (increase {m['increase']:.2f}x)"
                                                   for v, m in res.get("memory_ratio", {}).items())
                 if "memory_ratio" in res else ""), flush=True)
        if args.budgets:
            sweep = {}
            for mib in args.budgets.split(","):
                t = time_predictive(model, guide, x, args.samples, ["weight_sampling"], args.rounds,
                                    int(float(mib) * 2 ** 20))
                sweep[mib] = {"ws_seconds": t["median_seconds"]["weight_sampling"],
                              "det_seconds": t["median_seconds"]["deterministic"],
                              "ratio": t["ratio_to_S_deterministic"]["weight_sampling"],
                              "kernel_share_ws": t["kernel_share"]["weight_sampling"]}
                print(f"  budget {mib} MiB: {sweep[mib]}", flush=True)
            res["budget_sweep"] = sweep
    if args.cli_runs:
        out["cli_evaluate"] = cli = time_cli(*args.cli_runs, args.cli_samples, args.cli_rounds, args.threads)
        if "kernelnet32" in out["predictive"]:  # the best any predictive can do: S more deterministic passes
            p_det = out["predictive"]["kernelnet32"]["median_seconds"]["deterministic"]
            t_det = cli["median_seconds"]["deterministic"]
            cli["floor_ratio"] = (t_det + args.cli_samples * p_det) / t_det
        print(f"pyrocompress evaluate: {out['cli_evaluate']}", flush=True)
    if args.epoch_models:
        out["epochs"] = {}
        for name in args.epoch_models.split(","):
            out["epochs"][name] = time_epochs(name, data, args.quick, args.epoch_rounds, args.val_samples)
            print(f"epoch {name}: {out['epochs'][name]}", flush=True)
    out["load_average_at_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
