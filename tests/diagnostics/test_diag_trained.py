"""On models trained on digits: low-ranked groups are less useful, runs agree where identity is
meaningful, and the ``pyrocompress diagnose`` command works end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from pyrocompress.cli import main
from pyrocompress.diagnostics import run_agreement, score_dataset
from pyrocompress.infer.guides import posterior_mean_network
from pyrocompress.infer.predictive import evaluate


def _accuracy_without(run, groups) -> float:
    net = posterior_mean_network(run.model, run.guide)
    with torch.no_grad():
        net.fc1.weight[list(groups)] = 0.0
        net.fc1.bias[list(groups)] = 0.0
    return evaluate(net, run.data.test)["accuracy"]


@pytest.mark.parametrize("score,margin", [("norm", 0.03), ("kl", 0.01)])
def test_zeroing_lowest_ranked_neurons_costs_less_than_random(digits_run, score, margin):
    run = digits_run
    values = score_dataset(run.model, run.guide, score, level="group")[f"fc1.{score}"].values
    k = len(values) // 2
    lowest = _accuracy_without(run, np.argsort(values, kind="stable")[:k])
    rng = np.random.default_rng(0)
    random = [_accuracy_without(run, rng.choice(len(values), k, replace=False)) for _ in range(8)]
    assert lowest > np.mean(random) + margin, (lowest, np.mean(random))


def test_agreement_across_seeds(digits_run, digits_run_seed1):
    runs = (digits_run, digits_run_seed1)
    inputs = run_agreement([score_dataset(r.model, r.guide, "norm", level="in_channel", draws=0) for r in runs])
    # input pixels have an identity across runs (the always-blank border of the 8x8 digits is redundant in both)
    assert float(inputs["fc1.norm.rank_corr_mean"]) > 0.7
    groups = run_agreement([score_dataset(r.model, r.guide, "norm", level="group", draws=0) for r in runs])
    # output neurons of the last layer are the classes: they agree too; hidden units are permutation-symmetric
    assert float(groups["fc2.norm.rank_corr_mean"]) > 0.3
    assert abs(float(groups["fc1.norm.rank_corr_mean"])) < 0.5
    assert groups.attrs["statistic"].startswith("between-run")


def test_cli_diagnose(digits_run, capsys):
    run_dir = digits_run.path
    code = main(["diagnose", str(run_dir), "--group-draws", "100", "--hdi-prob", "0.9", "--threshold", "0.05"])
    out = capsys.readouterr().out
    assert code == 0
    assert "fc1" in out and "fc2" in out and "frac_snr_lt_1" in out
    diag = run_dir / "diagnostics"
    names = {p.name for p in diag.iterdir()}
    for stem in ("log_snr_hist", "group_norm_hist", "norm_forest", "mu_sigma"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert {"diagnostics.nc", "summary.csv", "group_summary.csv"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert (diag / "norm_forest.png").read_bytes()[:4] == b"\x89PNG"
    with xr.open_dataset(diag / "diagnostics.nc", group="posterior_moments") as ds:
        assert ds["fc1.weight"].dims == ("moment", "fc1_out", "fc1_in")
        assert ds.sizes["fc1_in"] == 64
    with xr.open_dataset(diag / "diagnostics.nc", group="redundancy") as ds:
        assert ds["fc1.norm"].dims == ("fc1_out",) and ds["fc1.in_norm"].dims == ("fc1_in",)
        assert ds.attrs["hdi_prob"] == pytest.approx(0.9)
    with xr.open_dataset(diag / "diagnostics.nc", group="posterior") as ds:
        assert ds["fc1.norm"].shape == (1, 100, 64)


def test_cli_diagnose_bad_input(digits_run, deterministic_run, tmp_path, capsys):
    assert main(["diagnose", str(tmp_path)]) == 2
    assert "not a pyrocompress run" in capsys.readouterr().err
    assert main(["diagnose", str(deterministic_run.path)]) == 2
    assert "deterministic" in capsys.readouterr().err
    assert main(["diagnose", str(digits_run.path), "--hdi-prob", "1.5", "--no-plots"]) == 2
    assert "hdi_prob" in capsys.readouterr().err
    assert main(["diagnose", str(digits_run.path), "--draws", "-3", "--no-plots"]) == 2
    assert "draws" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"format": "something else"}))
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    assert main(["diagnose", str(tmp_path)]) == 2
