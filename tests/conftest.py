"""Shared fixtures: small real data, reproducible seeds, a clean Pyro state per test."""
from __future__ import annotations

import os

import pyro
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _clean_pyro_state():
    """Every test starts with a fresh Pyro param store and fixed seeds."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits():
    from pyrocompress.data import load_dataset

    return load_dataset("digits", seed=0)


@pytest.fixture(scope="session")
def torch_threads():
    return torch.get_num_threads()
