"""Agreement of scores across runs: Spearman and Jaccard by hand, bad inputs named."""
import numpy as np
import pytest
import xarray as xr

from pyrocompress.diagnostics import jaccard, run_agreement, spearman


def test_spearman_and_jaccard_by_hand():
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    assert jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3) and jaccard(set(), set()) == 1.0


def test_run_agreement_needs_runs_and_group_level_scores():
    a = xr.Dataset({"fc.snr": ("fc_out", np.array([0.1, 2.0, 3.0]))})
    b = xr.Dataset({"fc.snr": ("fc_out", np.array([0.2, 3.0, 2.0]))})
    ag = run_agreement([a, b], bottom_k=1)
    assert float(ag["fc.snr.jaccard_mean"]) == 1.0  # both runs call unit 0 redundant
    assert float(ag["fc.snr.rank_corr_mean"]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2 runs"):
        run_agreement([a])
    with pytest.raises(ValueError, match="not both"):
        run_agreement([a, b], threshold=1.0, bottom_k=1)
    with pytest.raises(ValueError, match="unknown variable"):
        run_agreement([a, b], variables=["fc.kl"])
