"""Scoping of Pyro's process-wide state, so no parameter leaks between models, runs or tests."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pyro


@contextlib.contextmanager
def pyro_scope(validate_args: bool = False) -> Iterator[None]:
    """A fresh, temporary Pyro parameter store and the given argument-validation setting.

    pyrocompress keeps every parameter in its modules; any ``pyro.param`` statement run
    inside (autoguides, model hyperparameters) registers in a store that is discarded on
    exit, and the caller's store and validation flag are restored.
    """
    with pyro.get_param_store().scope(), pyro.validation_enabled(validate_args):
        yield
