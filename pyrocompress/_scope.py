"""Scoping of Pyro's process-wide state, so no parameter leaks between models, runs or tests."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import pyro

__all__ = ["pyro_scope", "VALIDATE_ENV"]

#: set to ``1`` to validate distribution arguments inside every scope, whatever the caller asks
#: (the test suite does, as Pyro's own suite runs with validation on; it costs milliseconds per step)
VALIDATE_ENV = "PYROCOMPRESS_VALIDATE_ARGS"


@contextlib.contextmanager
def pyro_scope(validate_args: bool = False) -> Iterator[None]:
    """A fresh, temporary Pyro parameter store and the given argument-validation setting.

    pyrocompress keeps every parameter in its modules; any ``pyro.param`` statement run
    inside (autoguides, model hyperparameters) registers in a store that is discarded on
    exit, and the caller's store and validation flag are restored. Validation is off by
    default (it costs milliseconds per SVI step) unless ``validate_args`` or the environment
    variable :data:`VALIDATE_ENV` is ``1``.
    """
    strict = os.environ.get(VALIDATE_ENV) == "1"
    with pyro.get_param_store().scope(), pyro.validation_enabled(bool(validate_args) or strict):
        yield
