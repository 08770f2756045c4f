"""The vocabulary: str-Enums parse their aliases case-insensitively and list the valid values otherwise."""
import pytest

from pyrocompress.names import SCORE_ALIASES, Kind, Level, Scope, Structure


def test_values_and_aliases_parse_to_members():
    assert Structure.parse("Kernels") is Structure.KERNEL and Structure.parse("group") is Structure.UNIT
    assert Scope.parse("per-layer") is Scope.LAYER and Kind.parse(Kind.BAYESIAN) is Kind.BAYESIAN
    assert Level.parse("unit") is Level.GROUP and Level.parse("in") is Level.IN_CHANNEL
    assert Structure.WEIGHT == "weight" and not Structure.WEIGHT.structured and Structure.UNIT.structured
    assert Kind.BAYESIAN.title == "Bayesian"
    assert SCORE_ALIASES["norm"] == "magnitude"


def test_unknown_values_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown structure 'rows'; valid structures: \['weight', 'neuron'"):
        Structure.parse("rows")
    with pytest.raises(ValueError, match="valid scopes"):
        Scope.parse("everywhere")
