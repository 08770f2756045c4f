"""Seconds per training step of moment propagation against sampling estimators, and the
cost of one NUTS gradient of a tiny model with 1 thread against torch's default threads.

Training part: kernelnet (N kernels, 28x28 inputs, 10 classes, batch 128, group-shared
guide as in the eVI papers) and LeNet-300-100; per network the steps of the lean ELBO with
``local_reparam`` and of :class:`MomentPropagationELBO` (exact / taylor ReLU, clark /
argmax pooling), forward + backward + Adam, interleaved round by round. It prints median
ms/step and the ratio moment propagation / local reparameterization.

NUTS part: median ms per potential-energy gradient (Pyro's ``potential_grad``) of an MLP
with hidden=[4] on 100 two-class digits, with ``torch.set_num_threads(1)`` and with the
default thread count (and with Pyro's ``jit_compile``).

    python benchmarks/bench_moments_reference.py --rounds 10 --steps 20 --kernels 32 --device auto
    python benchmarks/bench_moments_reference.py --rounds 2 --steps 2 --kernels 4   # smoke run
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pyrocompress.infer import MeanFieldELBO, resolve_device
from pyrocompress.infer.guides import MeanFieldGuide
from pyrocompress.infer.moments import MomentPropagationELBO
from pyrocompress.nn.model import BayesianModel
from pyrocompress.nn.zoo import build_model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _step_fn(model, guide, elbo, x, y):
    opt = torch.optim.Adam(list(guide.parameters()), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nll, kl = elbo.loss_terms(model, guide, x, y)
        (nll + kl).backward()
        opt.step()
    return step


def bench_training(args, device) -> None:
    torch.manual_seed(0)
    x = torch.randn(128, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    nets = {f"kernelnet{args.kernels}": ("kernelnet", {"kernels": args.kernels}, "group"),
            "lenet300": ("mlp", {}, None)}
    variants = {"local_reparam": lambda: MeanFieldELBO("local_reparam"),
                "mp_exact_clark": lambda: MomentPropagationELBO(relu="exact", pool="clark"),
                "mp_exact_argmax": lambda: MomentPropagationELBO(relu="exact", pool="argmax"),
                "mp_taylor_argmax": lambda: MomentPropagationELBO(relu="taylor", pool="argmax")}
    for net_name, (arch_name, opts, shared) in nets.items():
        model = BayesianModel.from_module(build_model(arch_name, (1, 28, 28), 10, **opts), 10,
                                          dataset_size=60000).to(device)
        guide = MeanFieldGuide(model, shared_scale=shared).to(device)
        steps = {k: _step_fn(model, guide, make(), x, y) for k, make in variants.items()}
        for fn in steps.values():  # warm-up
            fn()
        times = {k: [] for k in steps}
        for _ in range(args.rounds):
            for k, fn in steps.items():
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                _sync(device)
                times[k].append((time.perf_counter() - t0) / args.steps * 1e3)
        base = statistics.median(times["local_reparam"])
        print(f"\n{net_name} on {device} (batch 128): median ms/step, ratio to local_reparam")
        for k, t in times.items():
            med = statistics.median(t)
            print(f"  {k:18s} {med:8.2f} ms   x{med / base:5.2f}")


def bench_nuts(args) -> None:
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    from pyrocompress.data import load_dataset

    d = load_dataset("digits")
    m = d.train.y < 2
    x, y = d.train.x[m][:100], d.train.y[m][:100]
    model = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 2, hidden=(4,)), 2, dataset_size=100)
    default_threads = torch.get_num_threads()
    from pyrocompress.infer.nuts import count_latent_parameters

    print(f"\nNUTS potential gradient, mlp hidden=[4] ({count_latent_parameters(model)} parameters), "
          f"100 examples: median ms")
    results = {}
    for label, threads, jit in (("1 thread", 1, False), (f"{default_threads} threads", default_threads, False),
                                ("1 thread, jit", 1, True)):
        torch.set_num_threads(threads)
        init, pot, _, _ = initialize_model(model, (x, y), jit_compile=jit, skip_jit_warnings=True)
        params = {k: v.clone().requires_grad_() for k, v in init.items()}
        potential_grad(pot, params)
        rounds = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(args.steps * 5):
                potential_grad(pot, params)
            rounds.append((time.perf_counter() - t0) / (args.steps * 5) * 1e3)
        results[label] = statistics.median(rounds)
    torch.set_num_threads(default_threads)
    base = results["1 thread"]
    for label, med in results.items():
        print(f"  {label:18s} {med:8.3f} ms   x{med / base:5.2f} of 1 thread")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--kernels", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-nuts", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    bench_training(args, device)
    if not args.skip_nuts:
        bench_nuts(args)


if __name__ == "__main__":
    main()
