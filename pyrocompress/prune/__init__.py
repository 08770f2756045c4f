"""Pruning and self-compression: masks, policies, structured deletion, metrics, export.

* :mod:`.masks`: ``Masks`` (compose with ``&``; apply to plain networks and to a
  BayesianModel + MeanFieldGuide; ``step_hook`` for fine-tuning), ``MaskLayers`` handler;
* :mod:`.policy`: ``PrunePolicy`` (score, structure weight/neuron/kernel/unit, global or
  per-layer, sparsity / threshold / automatic threshold) -> Masks;
* :mod:`.shrink`: ``shrink`` physically deletes units (plain network, or Bayesian model
  and guide), exactly equal to the masked network;
* :mod:`.selfcompress`: ``self_compress`` one-shot or iterative;
* :mod:`.compression`: ``compression_report`` (params, FLOPs, bytes, bits, latency);
* :mod:`.export`: ``export_network`` / ``load_compressed`` (safetensors + JSON, TorchScript, ONNX).
"""
from .compression import compression_report, flops, layer_stats, measure_latency, posterior_bits, quantize_network
from .export import ExportError, export_network, load_compressed
from .masks import MaskLayers, Masks, layer_shapes
from .policy import STRUCTURES, PrunePolicy, auto_threshold
from .selfcompress import SelfCompressionResult, self_compress
from .shrink import ShrinkError, ShrinkPlan, Shrunk, plan_shrink, shrink

__all__ = [
    "Masks", "MaskLayers", "layer_shapes", "PrunePolicy", "auto_threshold", "STRUCTURES", "shrink", "plan_shrink",
    "Shrunk", "ShrinkPlan", "ShrinkError", "self_compress", "SelfCompressionResult", "compression_report", "flops",
    "layer_stats", "measure_latency", "posterior_bits", "quantize_network", "export_network", "load_compressed",
    "ExportError",
]
