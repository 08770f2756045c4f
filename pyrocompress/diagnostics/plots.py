"""Diagnostic figures (matplotlib, Agg canvas, no pyplot state), saved as PNG and SVG.

* ``log_snr_hist``: per layer, histogram of log10 SNR = log10(|mu| / sigma) of the weights;
* ``group_norm_hist``: per layer, histogram of the output groups' posterior-mean norms
  (the self-compression paper's figure of near-zero kernels), threshold marked;
* ``norm_forest``: per layer, groups ranked by norm with the HDI of the norm from draws
  (all groups up to ``max_groups``, else the lowest and highest half each);
* ``mu_sigma``: per layer, 2-D histogram of log10 |mu| against log10 sigma, SNR = 1 line.

Dense artists are rasterised in the SVGs so that files stay small for 10^5 weights.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import xarray as xr

from ..errors import UserError
from ..runs import atomic_write_bytes
from . import _arviz
from ._posterior import PosteriorView

__all__ = ["plot_diagnostics", "FIGURES", "FORMATS"]

FIGURES = ("log_snr_hist", "group_norm_hist", "norm_forest", "mu_sigma")
FORMATS = ("png", "svg")
_TINY = 1e-12


def _figure(ncols: int, height: float = 3.6, width: float = 4.2, left: float = 0.7, wspace: float = 0.8):
    """A figure with one panel per layer and fixed margins in inches (no layout engine: the
    constrained layout costs more than drawing the figure)."""
    # matplotlib takes about a second to import: imported when the first figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    total = max(width * ncols, 5.0)
    fig = Figure(figsize=(total, height))
    FigureCanvasAgg(fig)
    panel = (total - left - 0.3 - wspace * (ncols - 1)) / ncols
    fig.subplots_adjust(left=left / total, right=1 - 0.3 / total, bottom=0.55 / height, top=1 - 0.75 / height,
                        wspace=wspace / panel)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, out_dir: Path, stem: str, formats: Sequence[str], dpi: int) -> list[Path]:
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi)
        path = out_dir / f"{stem}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def _forest_rows(n: int, order: np.ndarray, max_groups: int) -> np.ndarray:
    if n <= max_groups:
        return order
    half = max_groups // 2
    return np.concatenate([order[:half], order[-(max_groups - half):]])


def plot_diagnostics(view: PosteriorView, out_dir: str | Path, norm_draws: Optional[xr.Dataset] = None,
                     hdi_prob: float = 0.95, threshold: float = 1e-2, formats: Sequence[str] = FORMATS,
                     max_groups: int = 30, dpi: int = 100) -> list[Path]:
    """Write the diagnostic figures of every Bayesian layer into ``out_dir``; returns the paths."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"unknown figure formats {bad}; valid formats: {list(FORMATS)}")
    if max_groups < 2:
        raise UserError(f"max_groups must be >= 2, got {max_groups}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = view.layers()
    L = len(layers)
    moments = {n: (view.moments[f"{n}.weight"][0].numpy(), view.moments[f"{n}.weight"][1].numpy())
               for n, _ in layers}
    paths: list[Path] = []

    # log SNR histograms
    fig, axes = _figure(L)
    for ax, (name, _) in zip(axes, layers):
        mu, sigma = moments[name]
        log_snr = np.log10(np.abs(mu).ravel() / np.maximum(sigma.ravel(), _TINY) + _TINY)
        ax.hist(log_snr, bins=60, histtype="stepfilled", alpha=0.8)
        ax.axvline(0.0, color="k", ls="--", lw=1, label="SNR = 1")
        ax.set_title(f"{name}.weight ({mu.size:,} weights)")
        ax.set_xlabel("log10 SNR = log10(|mu| / sigma)")
        ax.set_ylabel("weights")
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("Signal-to-noise ratio of the weights")
    paths += _save(fig, out_dir, "log_snr_hist", formats, dpi)

    # group norm histograms
    fig, axes = _figure(L)
    norms = {n: np.sqrt((moments[n][0].reshape(moments[n][0].shape[0], -1) ** 2).sum(1)) for n, _ in layers}
    for ax, (name, layer) in zip(axes, layers):
        unit = "kernels" if layer.kind == "conv" else "neurons"
        ax.hist(norms[name], bins=min(40, max(5, len(norms[name]) // 2)), histtype="stepfilled", alpha=0.8)
        ax.axvline(threshold, color="r", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_title(f"{name}: {len(norms[name])} {unit}")
        ax.set_xlabel("norm of the posterior mean ||mu||")
        ax.set_ylabel(unit)
        ax.legend(loc="upper right", fontsize="small")
    fig.suptitle("Norms of output groups (near-zero groups are redundant)")
    paths += _save(fig, out_dir, "group_norm_hist", formats, dpi)

    # forest plot of group norms with HDIs
    hdis = None
    if norm_draws is not None:
        hdis = _arviz.hdi(norm_draws[[f"{n}.norm" for n, _ in layers]], hdi_prob)
    rows = {n: _forest_rows(len(norms[n]), np.argsort(norms[n], kind="stable"), max_groups) for n, _ in layers}
    height = max(3.6, 0.16 * max(len(r) for r in rows.values()) + 1.4)
    fig, axes = _figure(L, height=height, left=0.9, wspace=1.1)
    for ax, (name, layer) in zip(axes, layers):
        idx = rows[name]
        y = np.arange(len(idx))
        if hdis is not None:
            bounds = hdis[f"{name}.norm"].values[idx]
            ax.hlines(y, bounds[:, 0], bounds[:, 1], color="C0", lw=2, label=f"{hdi_prob:.0%} HDI of the norm")
        ax.plot(norms[name][idx], y, "o", color="C1", ms=3.5, label="||mu||")
        ax.axvline(threshold, color="r", ls="--", lw=1, label=f"threshold {threshold:g}")
        ax.set_yticks(y)
        ax.set_yticklabels([f"{name}[{i}]" for i in idx], fontsize=7)
        if len(idx) < len(norms[name]):
            half = max_groups // 2
            ax.axhline(half - 0.5, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{name}: lowest {half} and highest {len(idx) - half} of {len(norms[name])}")
        else:
            ax.set_title(f"{name}: all {len(idx)} {'kernels' if layer.kind == 'conv' else 'neurons'}")
        ax.set_xlabel("group norm")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize="small", ncols=len(labels), frameon=False)
    fig.suptitle("Group norms, ranked (bottom = most redundant)", x=0.02, ha="left")
    paths += _save(fig, out_dir, "norm_forest", formats, dpi)

    # |mu| against sigma
    fig, axes = _figure(L, width=4.8, wspace=1.4)
    for ax, (name, _) in zip(axes, layers):
        mu, sigma = moments[name]
        lx = np.log10(np.abs(mu).ravel() + _TINY)
        ly = np.log10(sigma.ravel() + _TINY)
        lo = math.floor(min(np.percentile(lx, 0.5), ly.min()))
        hi = math.ceil(max(lx.max(), ly.max()))
        if float(np.ptp(ly)) < 1e-3 or float(np.ptp(lx)) < 1e-3:
            # one value on an axis: a 2-D histogram has no area to draw, so draw the points and say why
            ax.scatter(lx, ly, s=3, alpha=0.3, rasterized=True)
            ax.text(0.98, 0.5, f"every sigma = {10 ** float(ly[0]):.3g}:\nthe scales never left one value\n"
                                "(an untrained posterior?)" if float(np.ptp(ly)) < 1e-3 else "every |mu| is equal",
                    transform=ax.transAxes, fontsize="small", va="center", ha="right", color="darkred")
        else:
            *_, image = ax.hist2d(lx, ly, bins=80, cmin=1, cmap="viridis")
            image.set_rasterized(True)
            fig.colorbar(image, ax=ax, label="weights")
        ax.plot([lo, hi], [lo, hi], "r--", lw=1, label="SNR = 1")
        ax.set_xlabel("log10 |mu|")
        ax.set_ylabel("log10 sigma")
        ax.set_title(f"{name}.weight")
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle("Posterior mean against posterior standard deviation")
    paths += _save(fig, out_dir, "mu_sigma", formats, dpi)
    return paths
