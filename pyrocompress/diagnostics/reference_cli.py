"""``pyrocompress reference RUN_DIR``: a NUTS reference posterior for a trained run, compared with its guide."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..infer.nuts import DEFAULT_MAX_PARAMS, INIT_STRATEGIES
from ..infer.relabel import RELABEL_MODES
from ..runs import RunError, load_run
from .reference import compare_to_guide, model_fingerprint, reference_posterior
from .reference_io import load_reference, write_reference

__all__ = ["register"]


def _cmd_reference(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    if not run.is_bayesian:
        raise RunError(f"{args.run_dir} is a deterministic run; the reference posterior needs a Bayesian run "
                       f"(train without --deterministic)")
    if args.subset is not None and args.subset <= 0:
        raise UserError(f"--subset must be positive, got {args.subset}")
    data = run.load_data()
    split = data.train
    if args.subset is not None:
        split = type(split)(split.x[:args.subset], split.y[:args.subset])
    if args.reference_from:
        ref = load_reference(args.reference_from, model=run.model, num_data=len(split))
    else:
        ref = reference_posterior(run.model, split, num_chains=args.chains, num_samples=args.samples,
                                  warmup=args.warmup, max_params=args.max_params, allow_large=args.allow_large,
                                  seed=args.seed, guide=run.guide, init=args.init,
                                  max_tree_depth=args.max_tree_depth, jit_compile=args.jit, relabel=args.relabel,
                                  function_space_examples=args.function_space_examples, dense_mass=args.dense_mass,
                                  progress=not args.quiet)
    comparison = compare_to_guide(ref, run.model, run.guide, redundant_fraction=args.redundant_fraction,
                                  include_bias=args.include_bias)
    out = Path(args.out) if args.out else Path(args.run_dir) / "reference"
    write_reference(out, ref, comparison, extra={"run_dir": str(args.run_dir), "subset": args.subset,
                                                 "reference_from": args.reference_from,
                                                 "model": model_fingerprint(run.model)})
    d, c = ref.diagnostics, comparison["summary"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    reused = f" (reused from {args.reference_from})" if args.reference_from else ""
    print(f"NUTS{reused}: {d['num_params']} parameters, {d['num_data']} examples, {d['num_chains']} chains x "
          f"{d['num_samples']} draws (+{d['warmup']} warmup), {d['seconds']:.1f} s, init={d['init']}")
    if d.get("step_size"):
        print("adapted step size " + " / ".join(f"{v:.2g}" for v in d["step_size"]) + ", mean acceptance probability "
              + " / ".join(f"{v:.2f}" for v in d["mean_accept_prob"]))
    relabel = d.get("relabel", {})
    groups = relabel.get("groups", [])
    how = ""
    if groups:
        moved = ", ".join(f"{g['producer']} {g['permuted_fraction']:.0%}" for g in groups)
        how = f" (hidden units relabelled to the {relabel['target']}'s copy; draws permuted: {moved})"
    print(f"weight space{how}: max R-hat {fmt(d['max_rhat'])} (threshold {d['rhat_threshold']}), min bulk ESS "
          f"{d['min_ess_bulk']:.0f}, min tail ESS {d['min_ess_tail']:.0f} (threshold {d['ess_threshold']}), "
          f"divergences {d['divergences']} -> {'converged' if d['converged'] else 'NOT converged'}")
    if "unaligned" in d:
        u = d["unaligned"]
        print(f"  as sampled (not relabelled): max R-hat {fmt(u['max_rhat'])}, min bulk ESS {u['min_ess_bulk']:.0f}")
    if "function_space" in d:
        f = d["function_space"]
        print(f"function space (log-likelihood of {f['num_examples']} examples): max R-hat {fmt(f['max_rhat'])}, "
              f"min bulk ESS {f['min_ess_bulk']:.0f}, min tail ESS {f['min_ess_tail']:.0f} -> "
              f"{'converged' if f['converged'] else 'NOT converged'}")
    print(f"VI vs HMC over {c['num_weights']} weights: Spearman SNR {fmt(c['spearman_snr'])}, means "
          f"{fmt(c['spearman_mean'])}, stds {fmt(c['spearman_std'])}; median std ratio VI/HMC "
          f"{c['median_std_ratio_vi_over_hmc']:.3f}")
    print(f"redundant sets (lowest {c['redundant_fraction']:.0%} SNR): Jaccard {c['jaccard_redundant']:.3f}; "
          f"{len(c['vi_only_redundant'])} only VI marks redundant, {len(c['hmc_only_redundant'])} only HMC")
    print(f"written to {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reference`` sub-command."""
    p = sub.add_parser("reference", help="NUTS reference posterior of a small Bayesian run, compared with its guide")
    p.add_argument("run_dir", help="a Bayesian run directory (pyrocompress train --out)")
    p.add_argument("--chains", type=int, default=2, help="NUTS chains (run one after the other)")
    p.add_argument("--samples", type=int, default=200, help="draws per chain after warmup")
    p.add_argument("--warmup", type=int, default=200, help="warmup (adaptation) steps per chain")
    p.add_argument("--subset", type=int, default=None, help="use only the first N training examples (default: all)")
    p.add_argument("--max-params", type=int, default=DEFAULT_MAX_PARAMS,
                   help="refuse models with more latent parameters than this")
    p.add_argument("--allow-large", action="store_true", help="run NUTS even above --max-params")
    p.add_argument("--init", default="auto", help=f"chain initialisation, one of {list(INIT_STRATEGIES)}")
    p.add_argument("--max-tree-depth", type=int, default=8, help="NUTS maximum tree depth")
    p.add_argument("--jit", action="store_true", help="compile the potential with torch.jit")
    p.add_argument("--dense-mass", action="store_true",
                   help="adapt a dense mass matrix in warm-up (follows correlated weights; a few hundred at most)")
    p.add_argument("--relabel", default="auto", choices=list(RELABEL_MODES),
                   help="map every draw's hidden units to one copy of the permutation symmetry: the guide's "
                        "(guide; auto), the draws' mean (mean), or keep them as sampled (none)")
    p.add_argument("--function-space-examples", type=int, default=200, metavar="N",
                   help="R-hat / ESS of the pointwise log-likelihood of the first N examples (0: off)")
    p.add_argument("--redundant-fraction", type=float, default=0.5,
                   help="fraction of weights (lowest SNR) that make the redundant sets")
    p.add_argument("--include-bias", action="store_true", help="compare biases too")
    p.add_argument("--seed", type=int, default=0, help="random seed of the chains")
    p.add_argument("--reference-from", default=None, metavar="DIR",
                   help="reuse the NUTS posterior in DIR (an earlier --out of the same model, prior and data) "
                        "instead of sampling again, e.g. to compare a longer-trained guide (default: sample)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/reference)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_reference)
