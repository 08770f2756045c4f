"""InferenceData conversion: named dims and coords, NetCDF round trip, predictive groups, runs."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from pyrocompress.diagnostics import _arviz, combine_runs, jaccard, run_agreement, score_dataset, spearman
from pyrocompress.diagnostics import to_inference_data


def test_dims_and_coords_linear_and_conv(conv_model):
    model, guide = conv_model
    idata = to_inference_data(model, guide, draws=7, seed=1)
    mom = idata.posterior_moments
    assert mom["conv1.weight"].dims == ("moment", "conv1_out", "conv1_in", "conv1_kh", "conv1_kw")
    assert mom["conv1.weight"].shape == (2, 3, 2, 3, 3)
    assert mom["conv1.bias"].dims == ("moment", "conv1_out")
    assert mom["fc.weight"].dims == ("moment", "fc_out", "fc_in")
    assert list(mom["moment"].values) == ["loc", "scale"]
    np.testing.assert_array_equal(mom["fc_in"].values, np.arange(12))
    np.testing.assert_allclose(mom["fc.weight"].sel(moment="loc").values, guide.loc_of("fc.weight").detach().numpy())
    np.testing.assert_allclose(mom["conv1.weight"].sel(moment="scale").values,
                               guide.scale_of("conv1.weight").detach().numpy(), rtol=1e-6)
    post = idata.posterior
    assert post["conv1.weight"].dims == ("chain", "draw", "conv1_out", "conv1_in", "conv1_kh", "conv1_kw")
    assert post["fc.weight"].shape == (1, 7, 4, 12)
    assert post["conv1.norm"].dims == ("chain", "draw", "conv1_out")
    assert post["conv1.in_norm"].dims == ("chain", "draw", "conv1_in")
    # norms are those of the stored draws
    w = post["conv1.weight"].values[0]
    np.testing.assert_allclose(post["conv1.norm"].values[0], np.sqrt((w ** 2).sum(axis=(2, 3, 4))), rtol=1e-5)
    np.testing.assert_allclose(post["conv1.in_norm"].values[0], np.sqrt((w ** 2).sum(axis=(1, 3, 4))), rtol=1e-5)
    # reproducible with the seed
    again = to_inference_data(model, guide, draws=7, seed=1)
    np.testing.assert_array_equal(again.posterior["fc.weight"].values, post["fc.weight"].values)


def test_moments_only_and_group_draws(conv_model):
    model, guide = conv_model
    idata = to_inference_data(model, guide, draws=0, group_draws=50)
    assert "fc.weight" not in idata.posterior
    assert idata.posterior["fc.norm"].shape == (1, 50, 4)
    none = to_inference_data(model, guide, draws=0, group_draws=0)
    assert "posterior" not in none.groups() and "posterior_moments" in none.groups()
    with pytest.raises(ValueError, match="draws"):
        to_inference_data(model, guide, draws=-1)
    data = types.SimpleNamespace(x=torch.randn(5, 2, 4, 4), y=torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="draws > 0"):
        to_inference_data(model, guide, draws=0, data=data)


def test_netcdf_round_trip_keeps_dims_and_coords(conv_model, tmp_path):
    model, guide = conv_model
    idata = to_inference_data(model, guide, draws=5)
    idata.add_groups(redundancy=score_dataset(model, guide, level="group", draws=0))
    path = _arviz.to_netcdf(idata, tmp_path / "diag.nc")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    back = _arviz.from_netcdf(path)
    assert set(back.groups()) == {"posterior", "posterior_moments", "redundancy"}
    for group in back.groups():
        for var in idata[group].data_vars:
            assert back[group][var].dims == idata[group][var].dims
            np.testing.assert_array_equal(back[group][var].values, idata[group][var].values)
    assert back.redundancy["conv1.norm"].dims == ("conv1_out",)
    import arviz

    direct = arviz.from_netcdf(str(path))
    assert direct.posterior_moments["conv1.weight"].dims[1:] == ("conv1_out", "conv1_in", "conv1_kh", "conv1_kw")
    with xr.open_dataset(path, group="posterior_moments") as ds:
        np.testing.assert_array_equal(ds["conv1_kw"].values, np.arange(3))
        assert list(ds["moment"].values) == ["loc", "scale"]


def test_predictive_groups_use_joint_draws(conv_model):
    model, guide = conv_model
    torch.manual_seed(0)
    x, y = torch.randn(6, 2, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    idata = to_inference_data(model, guide, draws=4, data=types.SimpleNamespace(x=x, y=y), seed=2)
    assert idata.log_likelihood["obs"].dims == ("chain", "draw", "obs_id")
    np.testing.assert_array_equal(idata.observed_data["obs"].values, y.numpy())
    post = idata.posterior
    for s in range(4):
        w1, b1 = (torch.from_numpy(post[k].values[0, s]) for k in ("conv1.weight", "conv1.bias"))
        w2, b2 = (torch.from_numpy(post[k].values[0, s]) for k in ("fc.weight", "fc.bias"))
        logits = F.linear(F.conv2d(x, w1, b1).flatten(1), w2, b2)
        expected = F.log_softmax(logits, -1).gather(1, y[:, None])[:, 0]
        np.testing.assert_allclose(idata.log_likelihood["obs"].values[0, s], expected.numpy(), rtol=1e-4, atol=1e-5)
    pp = idata.posterior_predictive["obs"].values
    assert pp.shape == (1, 4, 6) and pp.min() >= 0 and pp.max() < 4
    assert np.isfinite(_arviz.loo(idata).elpd_loo)


def test_combine_runs_along_run_dim(conv_model):
    model, guide = conv_model
    runs = [to_inference_data(model, guide, draws=3, seed=s) for s in (0, 1)]
    both = combine_runs(runs, names=["seed0", "seed1"])
    assert both.posterior["fc.weight"].dims == ("run", "chain", "draw", "fc_out", "fc_in")
    assert list(both.posterior["run"].values) == ["seed0", "seed1"]
    assert "chain" in both.posterior.dims and both.posterior.sizes["chain"] == 1
    with pytest.raises(ValueError, match="dims or coords differ"):
        combine_runs([runs[0], to_inference_data(model, guide, draws=4)])
    with pytest.raises(ValueError, match="at least 2"):
        combine_runs(runs[:1])


def test_agreement_statistics_by_hand():
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    a = xr.Dataset({"fc.norm": ("fc_out", np.array([0.0, 1.0, 2.0, 3.0]))})
    b = xr.Dataset({"fc.norm": ("fc_out", np.array([1.0, 0.0, 2.0, 3.0]))})
    ag = run_agreement([a, b], bottom_k=1)
    assert float(ag["fc.norm.jaccard_mean"]) == 0.0
    assert float(ag["fc.norm.rank_corr_mean"]) == pytest.approx(0.8)
    ag = run_agreement([a, b], threshold=1.5)
    assert float(ag["fc.norm.jaccard_mean"]) == 1.0
    np.testing.assert_array_equal(ag["fc.norm.redundant_count"].values, [2, 2])
    np.testing.assert_allclose(ag["fc.norm.between_run_sd"].values, [np.sqrt(0.5), np.sqrt(0.5), 0, 0])
    np.testing.assert_allclose(ag["fc.norm.sorted_between_run_sd"].values, 0.0)
    assert ag["fc.norm.jaccard"].attrs["statistic"] == "between-run"
    with pytest.raises(ValueError, match="not both"):
        run_agreement([a, b], threshold=1.0, bottom_k=1)
