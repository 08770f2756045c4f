"""Seconds per SVI training step: pyrocompress against the hand-written floor and textbook Pyro.

All variants run in one process, interleaved round by round (so machine noise hits them
alike), on batch 128 of 28x28 inputs with 10 classes, data resident on the device.
Per network (LeNet-300-100 and kernelnet N=32) it times:

* ``deterministic``: the plain network, cross-entropy, Adam (the deterministic twin);
* ``floor_lrt`` / ``floor_ws``: a hand-written PyTorch Bayesian step (local
  reparameterization / weight sampling, closed-form Normal KL, Adam): the floor that no
  framework can beat by much; ``*_fused`` the same with torch's fused Adam (what
  ``pyrocompress.fit`` uses), so the floor is the best of the two;
* ``pyrocompress_lrt`` / ``_flipout`` / ``_ws``: pyrocompress's lean ELBO with each estimator;
* ``pyrocompress_fit_lrt``: the same through ``pyrocompress.fit`` (its whole loop per step);
* ``pyrocompress_lrt_<prior>``: the lean ELBO with local reparameterization under each
  sparsity-inducing prior (``log_uniform``; ``group_horseshoe`` / ``group_log_uniform`` on the
  hidden units with a log-uniform output layer), reported against the N(0, 1) step (target 1.2x);
* ``textbook_pyro``: PyroSample Normal priors on every weight, AutoNormal, Trace_ELBO, SVI.

It prints a table of median ms/step and the ratios the targets are stated in
(pyrocompress / floor for the same estimator; textbook / pyrocompress), and with
``--json`` writes them to a file.

    python benchmarks/bench_svi.py --rounds 15 --steps 20 --device auto
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample

import pyrocompress as pc
from pyrocompress.infer import MeanFieldELBO
from pyrocompress.infer.fit import make_optimizer
from pyrocompress.nn import BayesianModel

BATCH, CLASSES, N_DATA = 128, 10, 60000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------ hand-written floor
class FloorBayes(nn.Module):
    """Hand-written mean-field Bayesian network mirroring a Sequential architecture."""

    def __init__(self, arch: nn.Sequential, init_scale=1e-3, prior_scale=1.0):
        super().__init__()
        self.arch = arch
        self.mus, self.rhos, self.kinds, self.order = nn.ParameterList(), nn.ParameterList(), [], []
        rho0 = float(torch.log(torch.expm1(torch.tensor(init_scale))))
        for name, m in arch.named_children():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                for t in (m.weight, m.bias):
                    self.mus.append(nn.Parameter(t.detach().clone()))
                    self.rhos.append(nn.Parameter(torch.full_like(t, rho0)))
                self.order.append(("conv" if isinstance(m, nn.Conv2d) else "linear", len(self.mus) - 2))
            else:
                self.order.append(("fn", m))
        self.prior_scale = prior_scale

    def forward(self, x, lrt=True):
        sigmas = [F.softplus(r) for r in self.rhos]
        for kind, payload in self.order:
            if kind == "fn":
                x = payload(x)
                continue
            i = payload
            mw, mb, sw, sb = self.mus[i], self.mus[i + 1], sigmas[i], sigmas[i + 1]
            op = F.linear if kind == "linear" else F.conv2d
            if lrt:
                mean = op(x, mw, mb)
                var = op(x * x, sw * sw, sb * sb)
                x = mean + var.sqrt() * torch.randn_like(mean)
            else:
                x = op(x, mw + sw * torch.randn_like(sw), mb + sb * torch.randn_like(sb))
        return x, sigmas

    def kl(self, sigmas):
        p2 = self.prior_scale ** 2
        total = 0.0
        for mu, s in zip(self.mus, sigmas):
            total = total + 0.5 * (((s * s + mu * mu) / p2).sum() - mu.numel() - 2 * torch.log(s).sum()
                                   + mu.numel() * torch.log(torch.tensor(p2)))
        return total


# ------------------------------------------------------------------- textbook Pyro
class TextbookBNN(PyroModule):
    def __init__(self, arch: nn.Sequential):
        super().__init__()
        pyro.nn.module.to_pyro_module_(arch)
        self.net = arch
        for m in self.net.modules():
            for name, value in list(m.named_parameters(recurse=False)):
                setattr(m, name, PyroSample(dist.Normal(torch.zeros((), device=value.device),
                                                        torch.ones((), device=value.device))
                                            .expand(value.shape).to_event(value.dim())))

    def forward(self, x, y=None):
        logits = self.net(x)
        with pyro.plate("data", size=N_DATA, subsample_size=x.shape[0]):
            return pyro.sample("obs", dist.Categorical(logits=logits), obs=y)


def build_variants(model_name: str, device: torch.device):
    torch.manual_seed(0)
    arch = pc.build_model(model_name, (1, 28, 28), CLASSES).to(device)
    x = torch.randn(BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)
    variants = OrderedDict()

    det = pc.build_model(model_name, (1, 28, 28), CLASSES).to(device)
    det.load_state_dict(arch.state_dict())
    opt_det = make_optimizer("adam", det.parameters(), 1e-3, None)  # the twin uses fit's optimiser

    def det_step():
        opt_det.zero_grad(set_to_none=True)
        F.cross_entropy(det(x), y).backward()
        opt_det.step()
    variants["deterministic"] = det_step

    for lrt, tag, fused in ((True, "lrt", False), (False, "ws", False), (True, "lrt_fused", True),
                            (False, "ws_fused", True)):
        floor = FloorBayes(pc.build_model(model_name, (1, 28, 28), CLASSES)).to(device)
        opt_f = torch.optim.Adam(floor.parameters(), lr=1e-3, fused=fused)

        def floor_step(floor=floor, opt_f=opt_f, lrt=lrt):
            opt_f.zero_grad(set_to_none=True)
            logits, sigmas = floor(x, lrt=lrt)
            loss = F.cross_entropy(logits, y, reduction="sum") * (N_DATA / BATCH) + floor.kl(sigmas)
            loss.backward()
            opt_f.step()
        variants[f"floor_{tag}"] = floor_step

    def lean_step(estimator: str, prior="normal"):
        """One step of pyrocompress's lean ELBO with ``estimator`` under ``prior``, fit's optimiser."""
        model = BayesianModel.from_module(arch, CLASSES, prior=prior, dataset_size=N_DATA).to(device)
        guide = pc.make_guide(model).to(device)
        elbo = MeanFieldELBO(estimator=estimator)
        opt_p = make_optimizer("adam", list(model.parameters()) + list(guide.parameters()), 1e-3, None)

        def step():
            opt_p.zero_grad(set_to_none=True)
            nll, kl = elbo.loss_terms(model, guide, x, y)
            (nll + kl).backward()
            opt_p.step()
        return step

    for est, tag in (("local_reparam", "lrt"), ("flipout", "flipout"), ("weight_sampling", "ws")):
        variants[f"pyrocompress_{tag}"] = lean_step(est)
    # the sparsity-inducing priors (issue 13), local reparameterization: each against the N(0, 1) step above
    for tag, prior in SPARSE_PRIORS.items():
        variants[f"pyrocompress_lrt_{tag}"] = lean_step("local_reparam", prior)

    # the whole pyrocompress.fit loop, timed per step over one short epoch
    fit_model = BayesianModel.from_module(arch, CLASSES).to(device)
    fit_guide = pc.make_guide(fit_model).to(device)
    n_fit = BATCH * 10
    data = pc.from_arrays(torch.randn(n_fit, 1, 28, 28), torch.randint(0, CLASSES, (n_fit,)), val_fraction=0.0,
                          normalize=False)

    def fit_step():
        result = pc.fit(fit_model, fit_guide, data, epochs=1, batch_size=BATCH, device=device)
        return result.seconds / result.steps
    variants["pyrocompress_fit_lrt"] = fit_step

    tb_model = TextbookBNN(pc.build_model(model_name, (1, 28, 28), CLASSES).to(device))
    tb_guide = AutoNormal(tb_model)
    svi = SVI(tb_model, tb_guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())

    def textbook_step():
        svi.step(x, y)
    variants["textbook_pyro"] = textbook_step
    return variants


#: the sparsity-inducing priors timed against the default N(0, 1) prior (same estimator, same network)
SPARSE_PRIORS = {"log_uniform": "log_uniform", "group_horseshoe": {"default": "group_horseshoe", "output": "log_uniform"},
                 "group_log_uniform": {"default": "group_log_uniform", "output": "log_uniform"}}


def time_variants(variants, rounds: int, steps: int, device: torch.device):
    times = {k: [] for k in variants}
    for _ in range(2):  # warm-up
        for fn in variants.values():
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            if name.endswith("_fit_lrt"):
                _sync(device)
                times[name].append(fn())
                continue
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "kernelnet"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pc.infer.resolve_device(args.device)
    pyro.clear_param_store()
    results = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "pyro": pyro.__version__, "rounds": args.rounds, "steps": args.steps, "models": {}}
    for model_name in args.models:
        ms = time_variants(build_variants(model_name, device), args.rounds, args.steps, device)
        best_lrt = min(ms["floor_lrt"], ms["floor_lrt_fused"])
        best_ws = min(ms["floor_ws"], ms["floor_ws_fused"])
        ratios = {
            "lrt_vs_floor": ms["pyrocompress_lrt"] / ms["floor_lrt"],
            "lrt_vs_best_floor": ms["pyrocompress_lrt"] / best_lrt,
            "fit_lrt_vs_best_floor": ms["pyrocompress_fit_lrt"] / best_lrt,
            "ws_vs_floor": ms["pyrocompress_ws"] / ms["floor_ws"],
            "ws_vs_best_floor": ms["pyrocompress_ws"] / best_ws,
            "textbook_vs_best_floor_ws": ms["textbook_pyro"] / best_ws,
            "textbook_vs_lrt": ms["textbook_pyro"] / ms["pyrocompress_lrt"],
            "textbook_vs_ws": ms["textbook_pyro"] / ms["pyrocompress_ws"],
            "lrt_vs_deterministic": ms["pyrocompress_lrt"] / ms["deterministic"],
            "floor_lrt_vs_deterministic": ms["floor_lrt"] / ms["deterministic"],
            **{f"{tag}_vs_lrt": ms[f"pyrocompress_lrt_{tag}"] / ms["pyrocompress_lrt"] for tag in SPARSE_PRIORS},
        }
        results["models"][model_name] = {"ms_per_step": ms, "ratios": ratios}
        print(f"\n{model_name} ({device}, {torch.get_num_threads()} threads), median ms/step:")
        for k, v in ms.items():
            print(f"  {k:24s} {v:8.3f}")
        print("  ratios:")
        for k, v in ratios.items():
            print(f"  {k:24s} {v:8.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
