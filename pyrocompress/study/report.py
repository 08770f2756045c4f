"""The report of a study: a self-contained HTML page and a Markdown file, ShrinkBench style.

Following Blalock et al. (2020), "What is the state of neural network pruning?":

* accuracy against compression ratio (log x axis) for every method, mean +- standard
  deviation over seeds, one panel per (data set, model); the same for ECE, NLL, the
  agreement with the dense network's predictions, OOD AUROC and the theoretical speed-up
  (dense multiply-adds / nonzero multiply-adds);
* the per-layer sparsity of every method at one operating point;
* the kernel / neuron norm histograms of the trained networks, Bayesian (posterior mean)
  against deterministic (the figure of "Self-Compression in Bayesian Neural Networks");
* a table: per method, its total training epochs and the highest compression whose mean
  accuracy stays within 0.5 and 1 point of the strongest dense network (Bayesian or
  deterministic) trained for the same total epochs, with its ECE and speed-up.

x positions are the *reached* compression ratios (mean over seeds), not the targets:
structured methods and safety rules do not always land on the target.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from torch import nn

from ..runs import RunError, atomic_write_bytes, load_run
from .store import ResultsStore, StoreError

__all__ = ["write_report", "summary_table", "tolerance_table", "strongest_dense", "load_results", "trial_counts"]

_PLOTS = [
    ("accuracy", "test accuracy", False),
    ("ece", "expected calibration error (15 bins)", False),
    ("nll", "test negative log-likelihood", True),
    ("agreement", "agreement with the dense network (equal argmax)", False),
    ("ood_auroc", "OOD AUROC (predictive entropy)", False),
    ("speedup", "theoretical speed-up (dense MACs / nonzero MACs)", True),
]
_DENSE = ("dense-bayesian", "dense-deterministic")


_ESTIMATOR_WORDS = {"auto": "drawn as each network was trained: weight sampling, or its own propagated "
                            "moments after moment propagation",
                    "local_reparam": "local reparameterization: independent draws per example",
                    "weight_sampling": "weight sampling: one weight draw per sample, shared by the test set",
                    "flipout": "flipout"}


def load_results(study_dir: str | os.PathLike):
    """The tidy table of a study directory (pandas), with ``layers`` / ``info`` parsed."""
    store = ResultsStore(study_dir)
    meta = store.meta()
    rows = store.rows()
    if not rows:
        bad = store.unreadable()
        damaged = f" ({len(bad)} unreadable record(s): {', '.join(bad[:5])})" if bad else ""
        raise StoreError(f"{study_dir} has no finished trials yet{damaged}; run `pyrocompress study --out "
                         f"{study_dir}`")
    frame = pd.DataFrame(rows)
    for col in ("accuracy", "compression", "ece", "nll", "speedup", "agreement", "ood_auroc"):
        if col not in frame:
            frame[col] = np.nan
    return frame, meta


def _method_order(meta: dict, frame) -> list[str]:
    names = list(_DENSE) + [m["name"] for m in meta.get("config", {}).get("methods", [])]
    return [n for n in names if n in set(frame["method"])] + sorted(set(frame["method"]) - set(names))


def _panels(meta: dict, frame) -> list[tuple[str, str]]:
    cfg = meta.get("config", {})
    out = []
    for d in [d["name"] for d in cfg.get("datasets", [])] or sorted(set(frame["dataset"])):
        for m in [m.get("label") or m["name"] for m in cfg.get("models", [])] or sorted(set(frame["model"])):
            if ((frame["dataset"] == d) & (frame["model"] == m)).any():
                out.append((d, m))
    return out


def _colors(methods: list[str]) -> dict[str, Any]:
    # matplotlib takes about a second to import: imported when a figure is drawn
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    out = {"dense-bayesian": "black", "dense-deterministic": "0.5"}
    i = 0
    for m in methods:
        if m not in out:
            out[m] = cmap(i % 10)
            i += 1
    return out


def summary_table(frame):
    """Mean and std over seeds per (data set, model, method, operating point) of the ok trials."""
    ok = frame[frame["status"] == "ok"]
    cols = ["accuracy", "nll", "ece", "brier", "agreement", "tv_distance", "ood_auroc", "compression", "speedup",
            "latency_speedup", "epochs", "seconds", "dense_accuracy"]
    cols = [c for c in cols if c in ok]
    grouped = ok.groupby(["dataset", "model", "method", "operating_point"], sort=False)[cols]
    table = grouped.agg(["mean", "std", "count"])
    return table


def _is_dense(method: str) -> bool:
    return method.startswith("dense-")


def strongest_dense(sub, epochs: float) -> Optional[dict]:
    """The strongest dense network of one (data set, model) at ``epochs`` total training epochs: the
    highest mean accuracy over seeds among the dense reference trials (Bayesian or deterministic)
    trained for those epochs, else for fewer (``equal_epochs`` False), else None."""
    dense = sub[sub["method"].map(_is_dense)]
    if dense.empty:
        return None
    agg = dense.groupby("method").agg(accuracy=("accuracy", "mean"), epochs=("epochs", "mean"))
    equal = agg[(agg["epochs"] - epochs).abs() < 0.5]
    fewer = agg[agg["epochs"] <= epochs + 0.5]
    pick, at_equal = (equal, True) if not equal.empty else (fewer, False)
    if pick.empty:
        return None
    best = pick.sort_values("accuracy").index[-1]
    return {"method": best, "accuracy": float(pick.loc[best, "accuracy"]), "epochs": float(pick.loc[best, "epochs"]),
            "equal_epochs": at_equal}


def tolerance_table(frame, methods: list[str], tolerances=(0.5, 1.0)) -> list[dict]:
    """Per (data set, model, method): the highest mean compression whose mean accuracy is within ``tol``
    points of the strongest dense network (Bayesian or deterministic) trained for the method's total
    epochs (pre-training, training and fine-tuning counted; :func:`strongest_dense`); a dense
    reference itself is read against its own accuracy."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for (d, m), sub in ok.groupby(["dataset", "model"], sort=False):
        for method in methods:
            ms = sub[sub["method"] == method]
            if ms.empty:
                continue
            epochs = float(ms["epochs"].mean()) if "epochs" in ms else float("nan")
            reference = None if _is_dense(method) or not math.isfinite(epochs) else strongest_dense(sub, epochs)
            if reference is None:
                reference = {"method": method if _is_dense(method) else "its own",
                             "accuracy": float(ms["dense_accuracy"].mean()), "epochs": epochs, "equal_epochs": True}
            dense_acc = reference["accuracy"]
            agg = ms.groupby("operating_point").agg(accuracy=("accuracy", "mean"), compression=("compression", "mean"),
                                                    ece=("ece", "mean"), speedup=("speedup", "mean"),
                                                    seeds=("accuracy", "count"))
            row = {"dataset": d, "model": m, "method": method, "kind": ms["kind"].iloc[0],
                   "dense_accuracy": dense_acc, "epochs": epochs, "reference": reference}
            for tol in tolerances:
                good = agg[agg["accuracy"] >= dense_acc - tol / 100.0]
                if good.empty:
                    row[tol] = None
                else:
                    best = good.sort_values("compression").iloc[-1]
                    row[tol] = {"compression": float(best["compression"]), "accuracy": float(best["accuracy"]),
                                "ece": float(best["ece"]), "speedup": float(best["speedup"])}
            rows.append(row)
    return rows


# ------------------------------------------------------------------ figures
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    # matplotlib takes about a second to import: imported when a figure is drawn
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _grid(n: int):
    # matplotlib takes about a second to import: imported when a figure is drawn
    import matplotlib.pyplot as plt

    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _curve_figure(frame, panels, methods, colors, metric: str, label: str, log_y: bool) -> Optional[bytes]:
    ok = frame[(frame["status"] == "ok") & frame[metric].notna()]
    if ok.empty:
        return None
    fig, axes = _grid(len(panels))
    for ax, (d, m) in zip(axes, panels):
        sub = ok[(ok["dataset"] == d) & (ok["model"] == m)]
        for method in methods:
            ms = sub[sub["method"] == method]
            if ms.empty:
                continue
            agg = ms.groupby("operating_point").agg(x=("compression", "mean"), y=(metric, "mean"),
                                                    s=(metric, "std"), n=(metric, "count")).sort_values("x")
            s = agg["s"].fillna(0.0).to_numpy()
            if _is_dense(method):
                ax.axhline(agg["y"].iloc[0], color=colors[method], ls="--", lw=1,
                           label=f"{method} ({agg['y'].iloc[0]:.3g})")
                if s[0] > 0:
                    ax.axhspan(agg["y"].iloc[0] - s[0], agg["y"].iloc[0] + s[0], color=colors[method], alpha=0.08)
                continue
            ax.errorbar(agg["x"], agg["y"], yerr=s, color=colors[method], marker="o", ms=4, lw=1.5, capsize=3,
                        label=method)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("compression ratio (params dense / nonzero), log scale")
        ax.set_ylabel(label)
        ax.set_title(f"{d} / {m}")
        ax.grid(True, which="both", alpha=0.25)
        ax.xaxis.set_major_formatter(_ratio_formatter())
    axes[0].legend(fontsize=7.5, loc="best")
    fig.suptitle(f"{label}: mean \u00b1 std over seeds", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _ratio_formatter():
    # matplotlib takes about a second to import: imported when a figure is drawn
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}x")


def _nearest_point(frame, point: Optional[float]) -> Optional[str]:
    pts = frame[["operating_point", "target_compression"]].dropna().drop_duplicates()
    pts = pts[pts["target_compression"] > 1]
    if pts.empty:
        return None
    target = point if point is not None else float(np.median(pts["target_compression"]))
    idx = (np.log(pts["target_compression"].astype(float)) - math.log(target)).abs().idxmin()
    return str(pts.loc[idx, "operating_point"])


def _sparsity_figure(frame, panels, methods, colors, op: str) -> Optional[bytes]:
    ok = frame[(frame["status"] == "ok") & (frame["operating_point"] == op)]
    if ok.empty:
        return None
    fig, axes = _grid(len(panels))
    for ax, (d, m) in zip(axes, panels):
        sub = ok[(ok["dataset"] == d) & (ok["model"] == m)]
        present = [x for x in methods if x in set(sub["method"]) and not _is_dense(x)]
        layers: list[str] = []
        for entry in sub["layers"]:
            for name in (entry or {}):
                if name not in layers:
                    layers.append(name)
        width = 0.8 / max(len(present), 1)
        for i, method in enumerate(present):
            ms = sub[sub["method"] == method]
            vals, errs = [], []
            for name in layers:
                s = [1.0 - e[name]["nonzero"] / e[name]["params"] for e in ms["layers"] if e and name in e]
                vals.append(np.mean(s) if s else np.nan)
                errs.append(np.std(s) if s else 0.0)
            xs = np.arange(len(layers)) + (i - (len(present) - 1) / 2) * width
            ax.bar(xs, vals, width, yerr=errs, color=colors[method], label=method, capsize=2)
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels(layers)
        ax.set_ylim(0, 1.3)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("sparsity (1 - nonzero / dense params)")
        ax.set_title(f"{d} / {m} at {op}")
        ax.grid(True, axis="y", alpha=0.25)
    axes[0].legend(fontsize=7.5, loc="upper center", ncol=3, frameon=False)
    fig.suptitle(f"per-layer sparsity at the {op} operating point (mean \u00b1 std over seeds)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _group_norms(study_dir: Path, d: str, m: str) -> Optional[dict]:
    """Norms of the first layer's kernels / neurons of every trained seed, Bayesian vs deterministic."""
    base = study_dir / "runs" / d / m
    if not base.is_dir():
        return None
    out: dict[str, list] = {"bayesian": [], "deterministic": []}
    layer_name = None
    kind_of_layer = "units"
    for seed_dir in sorted(base.iterdir()):
        for kind in ("bayesian", "deterministic"):
            path = seed_dir / kind
            if not path.is_dir():
                continue
            try:
                run = load_run(path)
            except RunError:
                continue
            if run.is_bayesian:
                name = run.model.bayes_layers()[0][0]
                w = run.guide.loc_of(f"{name}.weight").detach()
                kind_of_layer = "kernel" if dict(run.model.bayes_layers())[name].kind == "conv" else "neuron"
            else:
                name, layer = next((n, l) for n, l in run.net.named_modules() if isinstance(l, (nn.Linear, nn.Conv2d)))
                w = layer.weight.detach()
            layer_name = name
            out[kind].append(w.reshape(w.shape[0], -1).norm(dim=1).numpy())
    if not out["bayesian"] and not out["deterministic"]:
        return None
    return {"layer": layer_name, "what": kind_of_layer,
            **{k: np.concatenate(v) if v else np.array([]) for k, v in out.items()}}


def _norm_figure(study_dir: Path, panels) -> Optional[bytes]:
    found = [(d, m, _group_norms(study_dir, d, m)) for d, m in panels]
    found = [x for x in found if x[2] is not None]
    if not found:
        return None
    fig, axes = _grid(len(found))
    for ax, (d, m, norms) in zip(axes, found):
        allv = np.concatenate([norms["bayesian"], norms["deterministic"]])
        bins = np.linspace(0, float(allv.max()) * 1.02 if allv.size else 1.0, 31)
        for kind, color in (("deterministic", "tab:orange"), ("bayesian", "tab:blue")):
            if norms[kind].size:
                ax.hist(norms[kind], bins=bins, alpha=0.55, color=color,
                        label=f"{kind} ({norms[kind].size} {norms['what']}s)")
        ax.set_xlabel(f"L2 norm of each {norms['what']} of layer {norms['layer']} "
                      f"(Bayesian: posterior mean)")
        ax.set_ylabel("count (all seeds)")
        ax.set_title(f"{d} / {m}")
        ax.legend(fontsize=8)
    fig.suptitle("kernel / neuron norms: Bayesian against deterministic", fontsize=11)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------- output
def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "\u2013"
    return f"{v:.{digits}f}"


def _tolerance_rows(tol_rows) -> tuple[list[str], list[list[str]]]:
    header = ["data set", "model", "method", "starts from", "total epochs", "strongest dense (epochs)", "dense acc.",
              "max compr. (\u22640.5 pt)", "acc.", "ECE", "speed-up",
              "max compr. (\u22641 pt)", "acc.", "ECE", "speed-up"]
    body = []
    for r in tol_rows:
        ref = r["reference"]
        ref_text = f"{ref['method']} ({ref['epochs']:.0f}{'' if ref['equal_epochs'] else ', fewer epochs'})"
        line = [r["dataset"], r["model"], r["method"], r["kind"], f"{r['epochs']:.0f}", ref_text,
                _fmt(r["dense_accuracy"], 4)]
        for tol in (0.5, 1.0):
            e = r.get(tol)
            if e is None:
                line += ["none", "\u2013", "\u2013", "\u2013"]
            else:
                line += [f"{e['compression']:.1f}x", _fmt(e["accuracy"], 4), _fmt(e["ece"]), f"{e['speedup']:.1f}x"]
        body.append(line)
    return header, body


def _points_rows(frame, methods) -> tuple[list[str], list[list[str]]]:
    ok = frame[frame["status"] == "ok"]
    header = ["data set", "model", "method", "point", "seeds", "compression", "accuracy", "ECE", "NLL", "agreement",
              "OOD AUROC", "speed-up", "epochs"]
    body = []
    for (d, m), sub in ok.groupby(["dataset", "model"], sort=False):
        for method in methods:
            ms = sub[sub["method"] == method]
            for op, g in sorted(ms.groupby("operating_point"), key=lambda kv: float(kv[1]["compression"].mean())):
                def ms_(c, digits=3):
                    v = g[c].astype(float)
                    return f"{v.mean():.{digits}f} \u00b1 {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}" \
                        if v.notna().any() else "\u2013"
                body.append([d, m, method, op, str(len(g)), f"{g['compression'].mean():.2f}x", ms_("accuracy", 4),
                             ms_("ece"), ms_("nll"), ms_("agreement"), ms_("ood_auroc"),
                             f"{g['speedup'].mean():.2f}x", f"{g['epochs'].mean():.0f}"])
    return header, body


def _md_table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _html_table(header, body) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:1em 0}th,td{border:1px solid #ddd;padding:.3em .55em;
text-align:right}th{background:#f4f4f4}td:nth-child(-n+4){text-align:left}tr:nth-child(even){background:#fafafa}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}.note{color:#555;font-size:.9em}
code{background:#f4f4f4;padding:0 .25em}.fail{color:#a00}
"""


def trial_counts(study_dir: str | os.PathLike) -> dict[str, Any]:
    """How many trials finished, failed, have an unreadable record (named) or were not run yet, of how many
    planned; ``text`` says it in one sentence (with what to do when some are missing)."""
    store = ResultsStore(study_dir)
    rows = store.rows()
    ok = sum(1 for r in rows if r.get("status", "ok") == "ok")
    failed = len(rows) - ok
    bad = store.unreadable()
    planned = store.planned()
    missing = None if planned is None else len(set(planned) - {r["trial_id"] for r in rows} - set(bad))
    parts = [f"{ok} finished trials", f"{failed} failed"]
    if bad:
        parts.append(f"{len(bad)} with an unreadable record ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''})")
    if missing:
        parts.append(f"{missing} not run yet")
    text = ", ".join(parts) + (f" of {len(planned)} planned" if planned is not None else "")
    if bad or missing:
        text += " (running the study again completes it)"
    return {"ok": ok, "failed": failed, "unreadable": bad, "missing": missing,
            "planned": None if planned is None else len(planned), "text": text}


def write_report(study_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None,
                 point: Optional[float] = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``figures/*.png``) into
    ``out`` (default ``STUDY_DIR/report``); returns their paths."""
    # matplotlib takes about a second to import: imported when a figure is drawn
    import matplotlib

    matplotlib.use("Agg", force=False)
    study_dir = Path(study_dir)
    frame, meta = load_results(study_dir)
    cfg = meta.get("config", {})
    out = Path(out) if out is not None else study_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    methods = _method_order(meta, frame)
    panels = _panels(meta, frame)
    colors = _colors(methods)
    if point is None:
        point = cfg.get("report_point")
    op = _nearest_point(frame, point)
    figures: list[tuple[str, str, str, Optional[bytes]]] = []
    for metric, label, log_y in _PLOTS:
        figures.append((f"{metric}.png", label, f"{label} against compression ratio",
                        _curve_figure(frame, panels, methods, colors, metric, label, log_y)))
    if op is not None:
        figures.append(("layer_sparsity.png", "per-layer sparsity", f"per-layer sparsity at {op}",
                        _sparsity_figure(frame, panels, methods, colors, op)))
    figures.append(("norms.png", "norm histograms", "kernel / neuron norms, Bayesian vs deterministic",
                    _norm_figure(study_dir, panels)))
    figures = [f for f in figures if f[3] is not None]
    for name, _, _, data in figures:
        atomic_write_bytes(out / "figures" / name, data)

    tol_header, tol_body = _tolerance_rows(tolerance_table(frame, [m for m in methods if not _is_dense(m)]))
    pts_header, pts_body = _points_rows(frame, methods)
    failed = frame[frame["status"] != "ok"]
    n_ok = int((frame["status"] == "ok").sum())
    seeds = cfg.get("seeds", sorted(set(frame["seed"])))
    counts = trial_counts(study_dir)
    intro = (f"Study **{cfg.get('name', study_dir.name)}** (configuration hash `{meta.get('config_hash')}`): "
             f"{counts['text']}; data sets "
             f"{', '.join(sorted(set(frame['dataset'])))}; models {', '.join(sorted(set(frame['model'])))}; "
             f"seeds {seeds}; methods {', '.join(m for m in methods if not _is_dense(m))}.")
    notes = ("Compression ratio = parameters of the dense network / nonzero parameters of the pruned one "
             "(structured methods count the physically shrunk network). Theoretical speed-up = dense "
             "multiply-adds / nonzero multiply-adds. Bayesian metrics are those of the posterior predictive "
             f"({cfg.get('eval_samples', '?')} samples, {_ESTIMATOR_WORDS.get(cfg.get('eval_estimator', 'auto'), cfg.get('eval_estimator'))}); agreement compares each pruned network's predictions with "
             "those of the dense network it was pruned from (Bayesian methods: the dense Bayesian network; "
             "baselines: the deterministic twin, trained with the same initial weights, epochs and data order). "
             "x positions are reached (not target) compression ratios, mean over seeds; error bars one standard "
             "deviation over seeds. Dashed lines: the dense networks.")
    tol_note = ("Highest compression whose mean accuracy over seeds stays within 0.5 (1) percentage points of the "
                "strongest dense network, Bayesian or deterministic, trained for the method's total epochs "
                "(pre-training, training and fine-tuning counted; the study trains a deterministic twin for every "
                "such budget; \u2018fewer epochs\u2019 marks a reference trained for fewer); \u2018none\u2019: no "
                "operating point does.")

    md = [f"# Pruning study report: {cfg.get('name', study_dir.name)}", "", intro, "", notes, "",
          "## Compression within 0.5 and 1 point of dense accuracy", "", tol_note, "",
          _md_table(tol_header, tol_body), ""]
    body = [f"<h1>Pruning study report: {html.escape(str(cfg.get('name', study_dir.name)))}</h1>",
            f"<p>{_md_inline(intro)}</p>", f"<p class='note'>{html.escape(notes)}</p>",
            "<h2>Compression within 0.5 and 1 point of dense accuracy</h2>",
            f"<p class='note'>{html.escape(tol_note)}</p>", _html_table(tol_header, tol_body)]
    for name, title, caption, data in figures:
        md += [f"## {title[0].upper() + title[1:]}", "", f"![{caption}](figures/{name})", ""]
        body += [f"<h2>{html.escape(title[0].upper() + title[1:])}</h2>",
                 f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"]
    md += ["## All operating points (mean \u00b1 std over seeds)", "", _md_table(pts_header, pts_body), ""]
    body += ["<h2>All operating points (mean \u00b1 std over seeds)</h2>", _html_table(pts_header, pts_body)]
    if len(failed):
        fail_rows = [[r["trial_id"], str(r.get("error", ""))[:300]] for _, r in failed.iterrows()]
        md += ["## Failed trials", "", "Logs: `logs/<trial id>.log` in the study directory. Running the study "
               "again retries them.", "", _md_table(["trial", "error"], fail_rows), ""]
        body += ["<h2 class='fail'>Failed trials</h2>",
                 "<p class='note'>Logs: <code>logs/&lt;trial id&gt;.log</code> in the study directory. Running the "
                 "study again retries them.</p>", _html_table(["trial", "error"], fail_rows)]
    md += ["", f"Results: `results.csv` (one row per trial) and `results.nc` (xarray Dataset) in `{study_dir}`."]
    body += [f"<p class='note'>Results: <code>results.csv</code> (one row per trial) and <code>results.nc</code> "
             f"(xarray Dataset) in <code>{html.escape(str(study_dir))}</code>.</p>"]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>pyrocompress study "
            f"{html.escape(str(cfg.get('name', '')))}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    atomic_write_bytes(out / "report.html", page.encode())
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    return {"html": out / "report.html", "markdown": out / "report.md", "figures": out / "figures"}


def _md_inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
