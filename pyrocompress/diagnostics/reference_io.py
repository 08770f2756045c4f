"""A reference posterior on disk: written once, reused to compare other guides of the same posterior.

A reference folder holds ``posterior.nc`` (ArviZ InferenceData, NetCDF), ``summary.csv``
(R-hat / ESS per parameter), ``comparison.json`` (diagnostics, settings, the comparison
summary and the model's fingerprint) and ``weights.csv`` (the per-weight comparison).
Only NetCDF, CSV and JSON are read back: nothing is unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from .._files import read_json
from ..errors import UserError
from ..nn.model import BayesianModel
from ..runs import write_csv, write_json
from . import _arviz
from .reference import ReferencePosterior, model_fingerprint

__all__ = ["write_reference", "load_reference", "ReferenceMismatchError"]


class ReferenceMismatchError(UserError):
    """A stored reference posterior is not the posterior of the model it is compared with."""


def write_reference(out_dir: str | os.PathLike, reference: ReferencePosterior,
                    comparison: Optional[dict[str, Any]] = None, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``comparison.json`` (diagnostics, config, comparison summary), ``summary.csv``
    (R-hat / ESS per parameter), ``weights.csv`` (per-weight comparison) and ``posterior.nc``
    (ArviZ InferenceData, netCDF) to ``out_dir``, each file atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _arviz.to_netcdf(reference.inference_data, out / "posterior.nc")
    table = reference.summary.reset_index().rename(columns={"index": "parameter"})
    write_csv(out / "summary.csv", table.to_dict(orient="records"))
    if comparison is not None:
        write_csv(out / "weights.csv", comparison["weights"])
    doc = {"diagnostics": reference.diagnostics, "config": reference.config}
    if comparison is not None:
        doc["comparison"] = comparison["summary"]
    if extra:
        doc.update(extra)
    write_json(out / "comparison.json", doc)
    return out


def load_reference(out_dir: str | os.PathLike, model: Optional[BayesianModel] = None,
                   num_data: Optional[int] = None) -> ReferencePosterior:
    """Load a reference posterior written by :func:`write_reference` (no NUTS is run).

    With ``model`` the stored draws are checked to be that model's posterior: the same sites
    and shapes and, where the folder records it (``model`` in ``comparison.json``), the same
    architecture, priors and likelihood; with ``num_data`` the same number of examples. A
    mismatch raises :class:`ReferenceMismatchError` naming it (a reference of another prior or
    data set would make every comparison meaningless).
    """
    out = Path(out_dir)
    missing = [n for n in ("posterior.nc", "comparison.json", "summary.csv") if not (out / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{out} is not a reference folder (missing {missing}); write one with "
                                f"`pyrocompress reference RUN_DIR --out {out}`")
    try:
        doc = read_json(out / "comparison.json", "reference comparison", ReferenceMismatchError)
        idata = _arviz.from_netcdf(out / "posterior.nc")
        summary = pd.read_csv(out / "summary.csv").set_index("parameter")
    except (ValueError, OSError, KeyError) as exc:
        raise ReferenceMismatchError(f"{out}: cannot read the reference posterior ({exc}); run NUTS again") from None
    sites = list(idata.posterior.data_vars)
    samples = {s: torch.as_tensor(np.asarray(idata.posterior[s].values)) for s in sites}
    diagnostics, config = doc.get("diagnostics", {}), doc.get("config", {})
    if model is not None:
        expected = {s: tuple(model.net.get_submodule(s.rsplit(".", 1)[0]).site_shape(s.rsplit(".", 1)[1]))
                    for s in model.site_names()}
        got = {s: tuple(t.shape[2:]) for s, t in samples.items()}
        if got != expected:
            raise ReferenceMismatchError(f"{out} holds draws of {got}, the model has sites {expected}: it is the "
                                         f"posterior of another model")
        stored = doc.get("model")
        if stored is not None:
            mine = json.loads(json.dumps(model_fingerprint(model)))
            for key, what in (("architecture", "architecture"), ("priors", "prior"), ("likelihood", "likelihood")):
                if stored.get(key) != mine.get(key):
                    raise ReferenceMismatchError(f"{out} was sampled under another {what} ({stored.get(key)}) than "
                                                 f"the model's ({mine.get(key)}); run NUTS for this model")
    if num_data is not None and diagnostics.get("num_data") not in (None, int(num_data)):
        raise ReferenceMismatchError(f"{out} conditions on {diagnostics.get('num_data')} examples, this data has "
                                     f"{num_data}; use the same data (and --subset) or run NUTS again")
    return ReferencePosterior(samples, idata, summary, diagnostics, config)
