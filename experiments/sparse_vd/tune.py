"""Scratch tuning: train by TrainConfig, prune by the prior's rule, print + save JSON."""
import json, sys, time, torch, warnings
import pyrocompress as pc
from pyrocompress.training import TrainConfig, train
from pyrocompress.infer.guides import posterior_mean_network
from pyrocompress.prune.policy import auto_threshold
warnings.simplefilter("ignore")
torch.set_num_threads(1)
cfg = json.loads(sys.argv[1]); out = sys.argv[2]
t = time.time()
run = train(TrainConfig(**cfg), out=out)
res = {"cfg": cfg, "metrics": {k: v for k, v in run.metrics.items() if not isinstance(v, dict)}, "seconds": time.time() - t,
       "history_last": run.history[-1]}
if run.guide is not None:
    model, guide = run.model, run.guide
    tot = kept = 0; layers = {}
    for name, layer in model.bayes_layers():
        w = name + ".weight"
        loc, scale = guide.loc_of(w).detach(), guide.scale_of(w).detach()
        if layer.prior.name == "log_uniform":
            keep = layer.prior.log_alpha(loc, scale) < layer.prior.threshold
        elif layer.prior.name == "group_horseshoe" and name != list(dict(model.bayes_layers()))[-1]:
            norms = loc.flatten(1).norm(dim=1)
            th = auto_threshold(norms)
            unit = norms >= th if th is not None else torch.ones_like(norms, dtype=torch.bool)
            keep = unit.reshape((-1,) + (1,) * (loc.dim() - 1)).expand_as(loc).clone()
            layers[name + "_units"] = [int(unit.sum()), unit.numel()]
            layers[name + "_relnorm_below_5pct"] = int((norms < 0.05 * norms.max()).sum())
        else:
            keep = torch.ones_like(loc, dtype=torch.bool)
        with torch.no_grad():
            guide.loc[w.replace(".", "__")].mul_(keep.to(loc.dtype)) if layer.prior.name != "group_horseshoe" else guide.loc[w.replace(".", "__")].mul_(keep.to(loc.dtype))
        tot += keep.numel(); kept += int(keep.sum()); layers[name] = [int(keep.sum()), keep.numel()]
    data = run.data
    acc = pc.evaluate(posterior_mean_network(model, guide), data.test)["accuracy"]
    res.update({"pruned_accuracy": acc, "compression_weights": tot / max(kept, 1), "layers": layers})
print(json.dumps(res))
json.dump(res, open(out + ".json", "w"), indent=1)
