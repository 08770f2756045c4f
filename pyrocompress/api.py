"""The front door: the verbs a user needs, one obvious function each.

``load_dataset``, ``build_model``, ``bayesianize``, ``make_guide``, ``fit``, ``evaluate``,
``diagnose``, ``self_compress``, ``run_study`` and ``load_compressed`` are the library's own
functions; this module adds the two that tie the layers together for a user:

* :func:`score`: the importances of a network's weights or units by any registered score;
* :func:`prune`: prune a trained run (a run directory), a Bayesian model and its guide, or a
  plain network by any method of the registry, to a sparsity, compression ratio or threshold,
  and get the pruned network(s) back (:class:`~pyrocompress.prune.methods.Pruned`).

Example::

    import pyrocompress as pc
    result = pc.prune("runs/mlp", method="bayes", sparsity=0.9, score="snr")
    small = result.deployable()                  # the plain network to ship
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .errors import UserError
from .data import DataBundle
from .infer.guides import is_posterior_guide
from .names import Structure
from .nn.model import BayesianModel
from .prune.importance import importances
from .prune.methods import Context, FitOptions, Pruned, method_for_run
from .prune.targets import make_target
from .runs import Run, load_run

__all__ = ["score", "prune"]


def score(network: Union[nn.Module, BayesianModel], guide: Any = None, name: Optional[str] = None,
          structure: Union[Structure, str] = "weight", *, seed: int = 0, **options: Any) -> dict[str, torch.Tensor]:
    """Importances (higher = keep) of a plain network, or of a Bayesian model under its guide.

    ``name`` defaults to ``snr`` for a Bayesian model and ``magnitude`` for a plain network;
    ``structure`` ``weight`` gives one value per weight, ``neuron`` / ``kernel`` / ``unit`` one
    per output unit. ``options`` go to the score (``delta``, ``hdi_prob``, ``reduction``).
    """
    if name is None:
        name = "snr" if isinstance(network, BayesianModel) else "magnitude"
    return importances(network, name, structure, guide=guide, seed=seed, **options)


def _as_run(source: Union[str, os.PathLike, Run, nn.Module], guide: Any,
            train: Optional[Mapping[str, Any]]) -> Run:
    """A run directory loaded, a run as it is, or an in-memory network wrapped as a run (no data of its own)."""
    if isinstance(source, (str, os.PathLike)):
        return load_run(source)
    if isinstance(source, Run):
        return source
    config = {"train": dict(train or {})}
    if isinstance(source, BayesianModel):
        if not is_posterior_guide(guide):
            raise UserError("pruning a BayesianModel needs its pyrocompress guide: prune(model, guide, ...)")
        return Run(Path("<in memory>"), dict(config, kind="bayesian"), model=source, guide=guide)
    if isinstance(source, nn.Module):
        if guide is not None:
            raise UserError("a guide was given with a plain network; pass the BayesianModel it belongs to")
        return Run(Path("<in memory>"), dict(config, kind="deterministic"), net=source)
    raise TypeError(f"prune() takes a run directory, a Run, a BayesianModel (with its guide) or an nn.Module, "
                    f"got {type(source).__name__}")


def prune(model_or_run: Union[str, os.PathLike, Run, nn.Module], guide: Any = None, method: str = "bayes", *,
          sparsity: Optional[float] = None, compression: Optional[float] = None,
          threshold: Optional[float] = None, auto: bool = False, data: Optional[DataBundle] = None,
          seed: int = 0, train: Optional[Mapping[str, Any]] = None, **options: Any) -> Pruned:
    """Prune a trained network by any registered method (see ``pyrocompress.prune.method_names()``).

    ``model_or_run``: a run directory (``pyrocompress train --out``), a loaded run, a
    :class:`~pyrocompress.nn.BayesianModel` with its ``guide``, or a plain ``nn.Module``. The
    target is one of ``sparsity``, ``compression``, ``threshold`` or ``auto`` (the automatic
    threshold; a prior's own deletion rule where it has one). ``data`` is needed by methods that
    train (fine-tuning, IMP, lottery tickets, gradual pruning; a run directory brings its own);
    ``train`` are the training settings of an in-memory network (lr, batch_size, epochs, ...; a
    run directory records its own). ``options`` are the method's (``score``, ``structure``,
    ``scope``, ``finetune_epochs``, ``rounds``, ...), checked before anything runs. Returns a
    :class:`~pyrocompress.prune.methods.Pruned`: ``.net`` or ``.model`` / ``.guide``, ``.masks``,
    ``.info``, ``.deployable()``.
    """
    target = make_target(sparsity=sparsity, compression=compression, threshold=threshold, auto=auto)
    run = _as_run(model_or_run, guide, train)
    chosen = method_for_run(method, options, run.is_bayesian)
    chosen.check_target(target)
    if data is None and "data" in run.config:  # a run directory records its data set
        data = run.load_data()
    ctx = Context(run=run, data=data, fit=FitOptions.of(run.config.get("train", {})), seed=seed)
    return chosen.run(ctx, target if target is not None else chosen.default_target())
