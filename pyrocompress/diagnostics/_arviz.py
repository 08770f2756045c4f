"""The one place where pyrocompress calls ArviZ.

ArviZ 0.2x (what installs on Python 3.11) is the tested range (``arviz>=0.20,<1``).
ArviZ 1.x replaces ``InferenceData`` with ``xarray.DataTree`` and moves the statistics
to ``arviz_stats``; supporting it later means changing only this module. Everything
else in :mod:`pyrocompress.diagnostics` works on plain ``xarray.Dataset`` objects and
goes through the functions here for what ArviZ adds (HDIs, summaries, the container,
NetCDF I/O, LOO).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np
import xarray as xr

from ..errors import UserError
from .._files import atomic_write

__all__ = [
    "arviz",
    "version",
    "InferenceData",
    "make_inference_data",
    "group_names",
    "get_group",
    "hdi",
    "summary_stats",
    "summary_all",
    "from_dict",
    "to_netcdf",
    "from_netcdf",
    "is_inference_data",
    "loo",
    "compare",
]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ArviZ's import-time refactor notice and its custom-group warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"arviz.*")
        warnings.filterwarnings("ignore", message=r".*not defined in the InferenceData scheme.*")
        warnings.filterwarnings("ignore", message=r".*group is not defined.*")
        yield


def arviz():
    """The imported ``arviz`` module (imported lazily: it takes a second or two)."""
    with _quiet():
        # arviz takes a second or two to import: imported when a diagnostic first needs it
        import arviz as az
    return az


def version() -> str:
    return str(arviz().__version__)


def _idata_class():
    return arviz().InferenceData


def InferenceData(*args, **kwargs):  # noqa: N802 - mirrors the ArviZ name
    """Build an ``arviz.InferenceData`` (custom groups allowed, without warnings)."""
    with _quiet():
        return _idata_class()(*args, **kwargs)


def is_inference_data(obj: Any) -> bool:
    return isinstance(obj, _idata_class())


def make_inference_data(groups: Mapping[str, xr.Dataset], attrs: Optional[dict] = None):
    """An ``InferenceData`` from named ``xarray.Dataset`` groups (empty groups are dropped)."""
    clean = {k: v for k, v in groups.items() if v is not None and len(v.data_vars) > 0}
    for ds in clean.values():
        if attrs:
            ds.attrs.update(attrs)
    return InferenceData(**clean)


def group_names(idata) -> list[str]:
    return list(idata.groups())


def get_group(idata, name: str) -> Optional[xr.Dataset]:
    """A group of an ``InferenceData`` as an ``xarray.Dataset``, or None when absent."""
    if name not in idata.groups():
        return None
    return idata[name]


def hdi(values: xr.Dataset | xr.DataArray, hdi_prob: float) -> xr.Dataset | xr.DataArray:
    """Highest-density interval over the ``chain`` and ``draw`` dims (``hdi`` dim: lower, higher)."""
    if not 0.0 < float(hdi_prob) < 1.0:
        raise UserError(f"hdi_prob must lie in (0, 1), got {hdi_prob}")
    with _quiet():
        return arviz().hdi(values, hdi_prob=float(hdi_prob))


def summary_stats(dataset: xr.Dataset, hdi_prob: float, var_names: Optional[Sequence[str]] = None):
    """``az.summary(kind="stats")``: mean, sd and HDI of each (group-level) variable.

    The sampling diagnostics (R-hat, ESS) are left out on purpose: the draws of a guide
    are i.i.d. and say nothing about SVI convergence.
    """
    if not 0.0 < float(hdi_prob) < 1.0:
        raise UserError(f"hdi_prob must lie in (0, 1), got {hdi_prob}")
    with _quiet():
        return arviz().summary(dataset, var_names=list(var_names) if var_names else None, kind="stats",
                               hdi_prob=float(hdi_prob))


def summary_all(idata, group: str, var_names: Sequence[str]):
    """``az.summary(kind="all")`` of one group: mean, sd, HDI, MCSE, bulk / tail ESS and split R-hat per
    scalar (for MCMC draws; R-hat of a single chain is undefined and comes back NaN, silently)."""
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # R-hat of one chain is undefined: reported as NaN
        return arviz().summary(idata, group=group, var_names=list(var_names), kind="all", round_to="none")


def from_dict(**groups):
    """``az.from_dict``: an ``InferenceData`` from dicts of arrays (``posterior``, ``sample_stats``, ...)."""
    with _quiet():
        return arviz().from_dict(**groups)


def to_netcdf(idata, path: str | os.PathLike) -> Path:
    """Write an ``InferenceData`` to NetCDF atomically (temp file in the same folder, then rename)."""
    def write(tmp: str) -> None:
        with _quiet():
            idata.to_netcdf(tmp)

    return atomic_write(path, write)


def from_netcdf(path: str | os.PathLike):
    """Read an ``InferenceData`` written by :func:`to_netcdf` (loaded into memory, file closed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with _quiet():
        idata = arviz().from_netcdf(str(path))
    for name in idata.groups():
        idata[name].load()
    return idata


def loo(idata, **kwargs):
    """PSIS-LOO of a model (needs the ``log_likelihood`` group)."""
    with _quiet():
        return arviz().loo(idata, **kwargs)


def compare(models: Mapping[str, Any], **kwargs):
    """``az.compare`` of several models' ``InferenceData`` (each with ``log_likelihood``)."""
    with _quiet():
        return arviz().compare(dict(models), **kwargs)
