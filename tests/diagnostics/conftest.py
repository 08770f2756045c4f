"""Shared fixtures of the diagnostics tests: small networks with set moments, trained digits runs."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pyrocompress.infer.guides import MeanFieldGuide
from pyrocompress.nn.model import BayesianModel

DIGITS_RUN = dict(dataset="digits", model="mlp", model_options={"hidden": [64]}, epochs=10, lr=1e-2,
                  prior="normal:0.3", init_scale=1e-2, eval_samples=8)


def set_moments(guide: MeanFieldGuide, site: str, loc: torch.Tensor, scale: torch.Tensor) -> None:
    """Set a site's posterior loc and scale exactly."""
    guide.set_posterior_(site, loc=loc, scale=scale)


@pytest.fixture
def tiny():
    """fc: Linear(3 -> 2) with prior N(0, 1) and hand-set moments."""
    net = nn.Sequential()
    net.add_module("fc", nn.Linear(3, 2))
    model = BayesianModel.from_module(net, 2, prior="normal:1.0")
    guide = MeanFieldGuide(model)
    loc = torch.tensor([[0.5, -0.2, 0.0], [1.0, 0.1, -0.3]])
    scale = torch.tensor([[0.25, 0.1, 0.5], [0.5, 0.2, 0.1]])
    set_moments(guide, "fc.weight", loc, scale)
    set_moments(guide, "fc.bias", torch.tensor([0.1, -0.1]), torch.tensor([0.2, 0.3]))
    return model, guide, loc, scale


@pytest.fixture
def conv_model():
    """conv1: Conv2d(2 -> 3, 3x3), flatten, fc: Linear(3*2*2 -> 4), on 2x4x4 inputs."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(2, 3, 3))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(3 * 2 * 2, 4))
    model = BayesianModel.from_module(net, 4, prior="normal:1.0")
    guide = MeanFieldGuide(model, init_scale=0.05)
    return model, guide


def _train(tmp_path_factory, name: str, **overrides):
    from pyrocompress.training import TrainConfig, train

    warnings.simplefilter("ignore")
    cfg = TrainConfig(**{**DIGITS_RUN, **overrides})
    return train(cfg, out=tmp_path_factory.mktemp(name))


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A Bayesian LeNet-300-100-like MLP (64 hidden) trained a few epochs on digits, saved as a run dir."""
    return _train(tmp_path_factory, "digits_seed0", seed=0)


@pytest.fixture(scope="session")
def digits_run_seed1(tmp_path_factory):
    return _train(tmp_path_factory, "digits_seed1", seed=1)


@pytest.fixture(scope="session")
def deterministic_run(tmp_path_factory):
    return _train(tmp_path_factory, "digits_det", seed=0, deterministic=True, epochs=1)
