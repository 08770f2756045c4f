"""The package's own error types: what a user can fix, as opposed to a bug.

Every error pyrocompress raises on purpose, for something the user gave or the files and
machine it works with, is a :class:`PyrocompressError`. The command line prints these as one
line (``pyrocompress CMD: error: ...``, exit status 2) and lets everything else, a bug, show
its traceback. Each subclass also derives from the built-in exception it replaces
(``ValueError``, ``RuntimeError``), so ``except ValueError`` in user code keeps working.

::

    PyrocompressError
    +-- UserError            an option, flag, argument or keyword has a bad value
    |   +-- TooLargeError    a size that would not fit in memory (refused before allocating)
    +-- DataError            a data set is missing, corrupt, or not the one named
    +-- RunError             a run directory or checkpoint is missing, corrupt, incomplete or of another model
    +-- OutputError          an output folder cannot be written as asked (a file, not writable, holds a result)
    |   +-- LockedError      another process writes into the folder now
    +-- StoreError           a study directory cannot be used as asked
    +-- DivergenceError      the training objective became NaN or infinite (a RuntimeError)

Other modules derive their own (``StudyConfigError``, ``OptionError``, ``ArchitectureError``,
``ExportError``, ...) from these.
"""
from __future__ import annotations

__all__ = ["PyrocompressError", "UserError", "TooLargeError", "DataError", "RunError", "OutputError", "LockedError",
           "StoreError", "DivergenceError"]


class PyrocompressError(Exception):
    """An error the user can fix: bad input, unusable files or folders, not enough memory."""


class UserError(PyrocompressError, ValueError):
    """An option, flag, argument or keyword has a value pyrocompress cannot use."""


class TooLargeError(UserError):
    """A size (a network, a file, a tensor) that would not fit; refused before anything is allocated."""


class DataError(PyrocompressError, ValueError):
    """A data set is missing, corrupt, not the one named, or does not fit what it is used for."""


class RunError(PyrocompressError, ValueError):
    """A run directory or checkpoint is missing, corrupt, incomplete, or of another model."""


class OutputError(PyrocompressError, ValueError):
    """An output folder cannot be written as asked: it is a file, not writable, the source, or holds a result."""


class LockedError(OutputError):
    """Another process is writing into the folder (its lock names it)."""


class StoreError(PyrocompressError, ValueError):
    """The study directory cannot be used as asked (another configuration, corrupt files)."""


class DivergenceError(PyrocompressError, RuntimeError):
    """The training objective became NaN or infinite."""
