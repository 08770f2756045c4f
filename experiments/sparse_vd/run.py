"""Train one network by a TrainConfig, prune it with a registry method, write what both gave as JSON.

    python experiments/sparse_vd/run.py CONFIG_JSON OUT_DIR METHOD [OPTIONS_JSON]

CONFIG_JSON is a TrainConfig as JSON; OUT_DIR receives the run; METHOD is a registry method
(``sparse_vd``, ``bayesian_compression``, ...) run at its own default target (the posterior's
automatic rule for the Bayesian recipes); OUT_DIR.json receives the configuration, the dense run's
metrics, the last epoch's history (scale movement included) and the pruned network's test metrics,
parameter counts per layer and compression (all parameters, biases included, and weights only).
One torch thread: two runs share the 2-core machine side by side.
"""
from __future__ import annotations

import json
import sys
import time
import warnings

import torch

from pyrocompress.infer.guides import posterior_mean_network
from pyrocompress.infer.predictive import evaluate
from pyrocompress.metrics import parameter_counts
from pyrocompress.prune.methods import Context, build_method
from pyrocompress.runs import load_run, write_json
from pyrocompress.training import TrainConfig, train


def _weights(net: torch.nn.Module) -> tuple[int, int]:
    """(weights, nonzero weights) of the Linear and Conv2d layers: biases left out, as Molchanov et al. count."""
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    return sum(m.weight.numel() for m in layers), sum(int((m.weight != 0).sum()) for m in layers)


def main(argv: list[str]) -> dict:
    cfg, out, method = json.loads(argv[0]), argv[1], argv[2]
    options = json.loads(argv[3]) if len(argv) > 3 else None
    torch.set_num_threads(1)
    warnings.simplefilter("default")
    t0 = time.time()
    run = train(TrainConfig(**cfg), out=out)
    res = {"cfg": cfg, "method": method, "options": options,
           "metrics": {k: v for k, v in run.metrics.items() if not isinstance(v, dict)},
           "train_seconds": time.time() - t0, "history_last": run.history[-1]}
    loaded = load_run(out)
    t1 = time.time()
    pruned = build_method(method, options).run(Context.of_run(loaded, run.data), None)
    net = pruned.deployable()
    counts = parameter_counts(net)
    dense_counts = parameter_counts(posterior_mean_network(loaded.model, loaded.guide) if loaded.is_bayesian
                                    else loaded.net)
    layers = {k: v for k, v in counts.items() if k != "total"}
    dense_net = posterior_mean_network(loaded.model, loaded.guide) if loaded.is_bayesian else loaded.net
    dense_weights = _weights(dense_net)[0]
    kept_weights = _weights(net)[1]
    metrics = evaluate(net, run.data.test)
    res.update({"prune_seconds": time.time() - t1, "pruned": metrics, "pruned_accuracy": metrics["accuracy"],
                "params": counts["total"]["params"], "nonzero": counts["total"]["nonzero"],
                "dense_params": dense_counts["total"]["params"], "layers": layers,
                "compression": dense_counts["total"]["params"] / counts["total"]["nonzero"],
                "compression_weights": dense_weights / max(kept_weights, 1),
                "info": {k: v for k, v in pruned.info.items() if not isinstance(v, (dict, list))}})
    print(json.dumps(res))
    write_json(out + ".json", res)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
