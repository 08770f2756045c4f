"""The per-layer summary table from closed-form moments, and the ArviZ summary of group norms."""
import pytest

from pyrocompress.diagnostics import group_summary, summary, to_inference_data


def test_summary_counts_from_hand_set_moments(tiny):
    model, guide, loc, scale = tiny
    table = summary(model, guide, threshold=0.6, draws=0)
    row = table.loc["fc"]
    assert row["params"] == 6 + 2 and row["groups"] == 2
    assert row["frac_snr_lt_1"] == pytest.approx(float((loc.abs() < scale).double().mean()))
    assert row["groups_norm_lt_t"] == int((loc.norm(dim=1) < 0.6).sum())
    assert row["mean_sigma"] == pytest.approx(float(scale.mean()))
    assert table.attrs["moments"] == "closed_form" and "groups_hdi_lt_t" not in table.columns
    with_draws = summary(model, guide, draws=50)
    assert "groups_hdi_lt_t" in with_draws.columns
    with pytest.raises(ValueError, match="threshold"):
        summary(model, guide, threshold=-1.0)


def test_group_summary_of_the_norm_draws(tiny):
    model, guide, _, _ = tiny
    idata = to_inference_data(model, guide, group_draws=50)
    table = group_summary(idata, 0.9)
    assert {"mean", "sd"} <= set(table.columns) and len(table) == 2  # one row per output group of fc
    with pytest.raises(ValueError, match="no group norms"):
        group_summary(idata, 0.9, layers=["conv9"])
