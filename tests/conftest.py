"""Shared fixtures: small real data, reproducible seeds, a clean Pyro state per test, Pyro's validation on.

As Pyro's own suite does, the tests run with distribution-argument validation on: globally, and
inside pyrocompress's Pyro scopes (which turn it off for speed otherwise; see
:data:`pyrocompress._scope.VALIDATE_ENV`). Subprocesses the tests start inherit the setting.
"""
from __future__ import annotations

import os

import pyro
import pytest
import torch

from pyrocompress._scope import VALIDATE_ENV

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ[VALIDATE_ENV] = "1"


@pytest.fixture(autouse=True)
def _pyro_validation():
    """Pyro validates distribution arguments in every test."""
    pyro.enable_validation(True)
    yield


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
