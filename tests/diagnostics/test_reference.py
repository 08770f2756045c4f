"""NUTS reference posterior (sampled by pyrocompress.infer.nuts, judged by pyrocompress.diagnostics.reference):
a conjugate model against its analytic posterior, the SVI-vs-HMC comparison end to end on a tiny network
(function and CLI), and the size limit."""
from collections import OrderedDict

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch import nn

from pyrocompress.cli import main
from pyrocompress.data import from_arrays, load_dataset
from pyrocompress.infer import fit
from pyrocompress.infer.guides import MeanFieldGuide
from pyrocompress.diagnostics import compare_to_guide, reference_posterior, write_reference
from pyrocompress.infer.nuts import TooLargeError, count_latent_parameters
from pyrocompress.nn.model import BayesianModel, bayesianize
from pyrocompress.nn.zoo import build_model


#: NUTS runs
pytestmark = pytest.mark.slow

class _NormalLikelihood:
    """y ~ N(f(x), sigma^2), owning the data plate (the conjugate model, written for the test)."""

    num_classes = None

    def __init__(self, sigma: float, dataset_size: int) -> None:
        self.sigma, self.dataset_size = sigma, dataset_size

    def __call__(self, pred, y=None):
        f = pred.reshape(-1)
        with poutine.scale(scale=self.dataset_size / f.shape[0]), pyro.plate("data", f.shape[0]):
            return pyro.sample("obs", dist.Normal(f, self.sigma), obs=y)


@pytest.mark.parametrize("dense_mass", [False, True])
def test_nuts_matches_conjugate_linear_regression(dense_mass):
    g = torch.Generator().manual_seed(0)
    n, sigma, prior_sd = 20, 0.5, 1.0
    x = torch.randn(n, 2, generator=g)
    y = x @ torch.tensor([1.5, -0.7]) + 0.3 + sigma * torch.randn(n, generator=g)
    net = bayesianize(nn.Sequential(OrderedDict(fc=nn.Linear(2, 1))), prior=f"normal:{prior_sd}")
    model = BayesianModel(net, _NormalLikelihood(sigma, dataset_size=1000))  # reset to n by reference_posterior
    ref = reference_posterior(model, (x, y), num_chains=2, num_samples=300, warmup=200, seed=1, dense_mass=dense_mass)
    assert model.likelihood.dataset_size == 1000  # restored
    # analytic posterior of (w1, w2, b): precision I / s0^2 + X^T X / sigma^2
    design = torch.cat([x, torch.ones(n, 1)], 1).double()
    precision = torch.eye(3, dtype=torch.float64) / prior_sd ** 2 + design.T @ design / sigma ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ design.T @ y.double() / sigma ** 2
    sd = cov.diagonal().sqrt()
    mom = ref.moments()
    hmc_mean = torch.cat([mom["fc.weight"][0].reshape(-1), mom["fc.bias"][0]]).double()
    hmc_sd = torch.cat([mom["fc.weight"][1].reshape(-1), mom["fc.bias"][1]]).double()
    # 600 draws (ESS a few hundred): MC error of the mean ~0.05 sd, of the sd ~5%;
    # tolerances 0.25 posterior sd for the means and 20% for the standard deviations
    assert ((hmc_mean - mean).abs() / sd).max() < 0.25, (hmc_mean, mean)
    assert ((hmc_sd / sd) - 1).abs().max() < 0.2, (hmc_sd, sd)
    d = ref.diagnostics
    assert d["max_rhat"] < 1.05 and d["min_ess_bulk"] > 100 and d["num_params"] == 3
    assert ref.samples["fc.weight"].shape == (2, 300, 1, 2)
    assert ref.config["dense_mass"] is dense_mass and d["relabel"] == {"target": "none"}  # no hidden layer
    assert d["function_space"]["num_examples"] == n and ref.inference_data.log_likelihood["y"].shape == (2, 300, n)


def _two_class_digits(n_train: int):
    d = load_dataset("digits")
    tr, te = d.train.y < 2, d.test.y < 2
    return from_arrays(d.train.x[tr][:n_train].numpy(), d.train.y[tr][:n_train].numpy(), d.test.x[te].numpy(),
                       d.test.y[te].numpy(), num_classes=2, val_fraction=0.0)


def test_svi_against_hmc_end_to_end(tmp_path):
    data = _two_class_digits(40)
    torch.manual_seed(0)
    model = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 2, hidden=(2,)), 2, dataset_size=40)
    guide = MeanFieldGuide(model, init_scale=0.1)
    fit(model, guide, data, epochs=20, batch_size=20, lr=3e-2, device="cpu")
    assert count_latent_parameters(model) == 64 * 2 + 2 + 2 * 2 + 2
    ref = reference_posterior(model, data.train, num_chains=2, num_samples=30, warmup=30, guide=guide,
                              max_tree_depth=4, seed=0)
    assert ref.diagnostics["init"] == "guide"
    assert set(ref.samples) == set(model.site_names())
    assert ref.samples["fc1.weight"].shape == (2, 30, 2, 64)
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(ref.summary.columns) and len(ref.summary) == 136
    cmp = compare_to_guide(ref, model, guide, redundant_fraction=0.25)
    s = cmp["summary"]
    assert s["num_weights"] == 64 * 2 + 2 * 2 and len(cmp["weights"]) == s["num_weights"]
    assert s["redundant_count"] == 33
    assert 0.0 <= s["jaccard_redundant"] <= 1.0
    assert s["spearman_snr"] is None or -1.0 <= s["spearman_snr"] <= 1.0
    # same-size redundant sets: as many weights only VI marks as only HMC marks
    assert len(s["vi_only_redundant"]) == len(s["hmc_only_redundant"])
    inter = sum(r["vi_redundant"] and r["hmc_redundant"] for r in cmp["weights"])
    assert np.isclose(s["jaccard_redundant"], inter / (2 * 33 - inter))
    row = cmp["weights"][0]
    assert row["name"] == "fc1.weight[0,0]"
    assert np.isclose(row["vi_mean"], float(guide.loc_of("fc1.weight").detach()[0, 0]))
    assert np.isclose(row["hmc_mean"], float(ref.samples["fc1.weight"][..., 0, 0].mean()), atol=1e-6)
    out = write_reference(tmp_path / "ref", ref, cmp)
    assert {p.name for p in out.iterdir()} == {"comparison.json", "summary.csv", "weights.csv", "posterior.nc"}
    import arviz as az
    idata = az.from_netcdf(out / "posterior.nc")
    assert idata.posterior["fc1.weight"].shape == (2, 30, 2, 64)


def test_reference_cli_and_size_limit(tmp_path, capsys):
    from pyrocompress.training import TrainConfig, train

    run_dir = tmp_path / "run"
    train(TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [2]}, epochs=1, limit=200,
                      device="cpu"), out=run_dir)
    code = main(["reference", str(run_dir), "--chains", "2", "--samples", "15", "--warmup", "15", "--subset", "30",
                 "--max-tree-depth", "3", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "R-hat" in printed and "Jaccard" in printed
    assert "hidden units relabelled to the guide's copy" in printed and "function space" in printed
    import json
    doc = json.loads((run_dir / "reference" / "comparison.json").read_text())
    assert doc["diagnostics"]["num_data"] == 30 and doc["diagnostics"]["num_chains"] == 2
    assert doc["diagnostics"]["function_space"]["num_examples"] == 30
    assert doc["diagnostics"]["relabel"]["groups"][0]["producer"] == "fc1"
    assert "spearman_snr" in doc["comparison"]
    # the stored posterior is reused (no NUTS) for the same model, prior and data, refused for another
    code = main(["reference", str(run_dir), "--reference-from", str(run_dir / "reference"), "--subset", "30",
                 "--out", str(tmp_path / "again"), "--quiet"])
    assert code == 0 and "reused from" in capsys.readouterr().out
    again = json.loads((tmp_path / "again" / "comparison.json").read_text())
    assert again["comparison"]["spearman_snr"] == doc["comparison"]["spearman_snr"]
    assert main(["reference", str(run_dir), "--reference-from", str(run_dir / "reference"), "--quiet",
                 "--out", str(tmp_path / "x")]) == 2
    assert "conditions on 30 examples" in capsys.readouterr().err
    other = tmp_path / "other"
    train(TrainConfig(dataset="digits", model="mlp", model_options={"hidden": [2]}, prior="normal:0.5", epochs=1,
                      limit=200, device="cpu"), out=other)
    assert main(["reference", str(other), "--reference-from", str(run_dir / "reference"), "--subset", "30",
                 "--quiet", "--out", str(tmp_path / "y")]) == 2
    assert "another prior" in capsys.readouterr().err
    assert main(["reference", str(other), "--reference-from", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "not a reference folder" in capsys.readouterr().err
    # above the size limit: a clear refusal (exit status 2, the reason and the override named)
    code = main(["reference", str(run_dir), "--max-params", "100"])
    assert code == 2
    err = capsys.readouterr().err
    assert "160 latent parameters" in err and "allow" in err


def test_refuses_large_models_without_override():
    model = BayesianModel.from_module(build_model("mlp", (1, 8, 8), 10, hidden=(40,)), 10)
    assert count_latent_parameters(model) == 64 * 40 + 40 + 40 * 10 + 10
    x, y = torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TooLargeError, match=r"3010 latent parameters.*max_params=2000.*allow_large=True"):
        reference_posterior(model, (x, y))
    with pytest.raises(ValueError, match="init='guide' needs"):
        reference_posterior(model, (x, y), init="guide", allow_large=True)
    with pytest.raises(ValueError, match="unknown init"):
        reference_posterior(model, (x, y), init="zeros")
