"""Pruning and self-compression: importance -> policy -> removal, the methods that combine them, export.

* :mod:`.importance`: ``importances`` of a plain network or a Bayesian model (the one score registry);
* :mod:`.targets`: ``Sparsity`` / ``Compression`` / ``Threshold`` / ``AutoThreshold`` (how much to prune);
* :mod:`.policy`: ``PrunePolicy`` (score, structure weight/neuron/kernel/unit, global or per layer,
  sparsity / threshold / automatic threshold, a prior's own deletion rule) -> Masks;
* :mod:`.masks`: ``Masks`` (compose with ``&``; apply to plain networks and to a BayesianModel +
  guide; ``step_hook`` for fine-tuning), ``MaskLayers`` handler;
* :mod:`.shrink`: ``shrink`` physically deletes units (plain network, or Bayesian model and guide),
  exactly equal to the masked network;
* :mod:`.selfcompress`: ``self_compress`` one-shot or iterative;
* :mod:`.baselines`: magnitude, random, IMP, lottery tickets, gradual pruning of plain networks;
* :mod:`.methods`: the method registry every front door (CLI, studies, Python) runs methods through;
* :mod:`.compression`: ``compression_report`` (params, multiply-adds, bytes, bits, latency);
* :mod:`.export`: ``export_network`` / ``load_compressed`` (safetensors + JSON, CSR and quantised CSR, ExportedProgram,
  ONNX, TorchScript);
* :mod:`.outputs` and :mod:`.cli`: what ``pyrocompress prune`` / ``compress`` write.
"""
from .compression import (compression_report, flops, latency_of, layer_stats, macs, measure_latency, posterior_bits,
                          quantize_network)
from .export import ExportError, export_network, load_compressed
from .importance import importances
from .masks import MaskLayers, Masks, layer_shapes
from .methods import METHODS, Context, Method, Pruned, build_method, method_names
from .policy import STRUCTURES, PrunePolicy, auto_threshold
from .selfcompress import SelfCompressionResult, self_compress
from .shrink import ShrinkError, ShrinkPlan, Shrunk, plan_shrink, shrink
from .targets import AutoThreshold, Compression, Sparsity, Threshold

__all__ = [
    "Masks", "MaskLayers", "layer_shapes", "PrunePolicy", "auto_threshold", "STRUCTURES", "shrink", "plan_shrink",
    "Shrunk", "ShrinkPlan", "ShrinkError", "self_compress", "SelfCompressionResult", "compression_report", "macs",
    "flops", "latency_of", "layer_stats", "measure_latency", "posterior_bits", "quantize_network", "export_network", "load_compressed",
    "ExportError", "importances", "Sparsity", "Compression", "Threshold", "AutoThreshold", "METHODS", "Method",
    "Pruned", "Context", "build_method", "method_names",
]
