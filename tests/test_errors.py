"""The package's own errors: one hierarchy under PyrocompressError, each still the built-in it replaced."""
import pytest

from pyrocompress import errors


def test_every_error_pyrocompress_raises_on_purpose_is_one_of_its_own():
    from pyrocompress.data import DataError
    from pyrocompress.diagnostics.reference_io import ReferenceMismatchError
    from pyrocompress.infer.fit import DivergenceError
    from pyrocompress.infer.moments import UnsupportedLayerError
    from pyrocompress.infer.nuts import TooLargeError
    from pyrocompress.nn.arch import ArchitectureError
    from pyrocompress.prune.export import ExportError
    from pyrocompress.prune.methods import OptionError, UnknownMethodError
    from pyrocompress.prune.shrink import ShrinkError
    from pyrocompress.runs import RunError
    from pyrocompress.study.config import StudyConfigError
    from pyrocompress.study.store import StoreError

    for cls in (DataError, RunError, StoreError, StudyConfigError, OptionError, UnknownMethodError, ArchitectureError,
                ExportError, ShrinkError, ReferenceMismatchError, TooLargeError, errors.UserError,
                errors.OutputError, errors.LockedError):
        assert issubclass(cls, errors.PyrocompressError) and issubclass(cls, ValueError), cls
    assert issubclass(DivergenceError, errors.PyrocompressError) and issubclass(DivergenceError, RuntimeError)
    assert issubclass(UnsupportedLayerError, errors.PyrocompressError) and issubclass(UnsupportedLayerError, TypeError)
    assert issubclass(StudyConfigError, errors.UserError) and issubclass(TooLargeError, errors.TooLargeError)


def test_option_errors_of_the_library_are_user_errors():
    from pyrocompress.infer.fit import make_optimizer
    from pyrocompress.names import Structure
    from pyrocompress.nn.priors import make_prior

    for call in (lambda: make_prior("laplace"), lambda: Structure.parse("rows"),
                 lambda: make_optimizer("adagrad", [], 0.1, None)):
        with pytest.raises(errors.UserError):
            call()
