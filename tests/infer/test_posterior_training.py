"""The posterior is really trained: scales converge in the epochs a user runs, their movement is
recorded, an untrained (step-limited) posterior is flagged, and SNR ranks differently from |mu|."""
import math
import warnings

import pytest
import torch
from scipy.stats import spearmanr

import pyrocompress as pc
from pyrocompress.infer import fit, make_guide
from pyrocompress.infer.fit import PosteriorNotTrainedWarning, check_scales_moved, default_scale_lr
from pyrocompress.nn import BayesianModel


def _softmax_regression(digits, seed=0):
    torch.manual_seed(seed)
    net = pc.build_model("mlp", digits.input_shape, 10, hidden=())
    return BayesianModel.from_module(net, 10, prior="normal:1.0")


def _fit(model, digits, **options):
    guide = make_guide(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PosteriorNotTrainedWarning)
        result = fit(model, guide, digits, seed=0, device="cpu", val_samples=2, **options)
    return guide, result


def test_default_scales_converge_to_a_long_run_within_the_users_epochs(digits):
    """Softmax regression on digits: 100 epochs (1,200 steps) with the default scale settings reach the
    scales of a run three times longer with a decaying learning rate (the converged mean-field
    posterior) to within 20% (the locations, at lr 0.01, need about that many steps themselves)."""
    short_guide, short = _fit(_softmax_regression(digits), digits, epochs=100, lr=0.01)
    long_guide, _ = _fit(_softmax_regression(digits), digits, epochs=300, lr=0.01, lr_schedule="cosine")
    s_short = short_guide.scale_of("fc1.weight").detach()
    s_long = long_guide.scale_of("fc1.weight").detach()
    ratio = (s_short / s_long).log().abs()
    assert float(ratio.median()) < math.log(1.2), float(ratio.median())
    # the history says how far the scales moved and that they stopped racing
    last = short.history[-1]
    assert last["scale_move_median"] > math.log(10) and last["scale_unmoved_fraction"] < 0.05
    assert last["scale_speed"] < 0.5 and last["kl_nll_ratio"] > 0


def test_a_step_limited_posterior_is_flagged(digits):
    """A too small scale learning rate: every scale moves in lockstep at Adam's speed limit."""
    model = _softmax_regression(digits)
    guide = make_guide(model)
    with pytest.warns(PosteriorNotTrainedWarning, match="have not converged|still within"):
        result = fit(model, guide, digits, epochs=5, lr=0.01, scale_lr=1e-3, seed=0, device="cpu", val_samples=2)
    assert result.history[-1]["scale_speed"] > 0.8
    # an untouched guide: every scale at its start
    fresh = make_guide(_softmax_regression(digits))
    with pytest.warns(PosteriorNotTrainedWarning, match="100% of the posterior scales"):
        message = check_scales_moved(fresh, "diagnose")
    assert "--scale-lr" in message


def test_default_scale_learning_rate_covers_short_runs():
    assert default_scale_lr(1e-3, 100_000) == pytest.approx(1e-2)
    assert default_scale_lr(1e-3, 600) == pytest.approx(15.0 / 600)
    assert default_scale_lr(1e-3, 30) == pytest.approx(0.05)  # capped: a 5% change of sigma per step


def test_trained_lenet_300_100_ranks_by_snr_differently_from_magnitude(digits):
    torch.manual_seed(0)
    model = BayesianModel.from_module(pc.build_model("mlp", digits.input_shape, 10), 10)
    guide, _ = _fit(model, digits, epochs=30, lr=0.01)
    for layer in ("fc1", "fc2", "fc3"):
        loc = guide.loc_of(f"{layer}.weight").detach().flatten()
        scale = guide.scale_of(f"{layer}.weight").detach().flatten()
        rho = spearmanr((loc.abs() / scale).numpy(), loc.abs().numpy()).statistic
        assert rho < 0.99, (layer, rho)  # a step-limited posterior gives 1.0000 in every layer
    # and the scales spread instead of sharing one step-limited value
    scales = guide.scale_of("fc1.weight").detach()
    assert float(scales.max() / scales.min()) > 3  # step-limited: all equal (ratio 1)
