"""Targets: validated once when made; a compression ratio becomes a weight or unit sparsity."""
import pytest
from torch import nn

from pyrocompress.prune.targets import (AutoThreshold, Compression, Sparsity, Threshold, as_sparsity, make_target,
                                        search_unit_sparsity, weight_sparsity_for)


def test_each_target_checks_its_value():
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Sparsity(bad)
    with pytest.raises(ValueError, match=">= 1"):
        Compression(0.5)
    with pytest.raises(ValueError, match="finite"):
        Threshold(float("inf"))
    with pytest.raises(ValueError, match="positive"):
        AutoThreshold(0.0)
    s = Sparsity(0.5)
    assert as_sparsity(s) is s and as_sparsity(0.25) == Sparsity(0.25)


def test_make_target_takes_exactly_one():
    assert make_target() is None
    assert make_target(compression=8) == Compression(8.0)
    assert make_target(auto=True, min_separation=1.0) == AutoThreshold(1.0)
    with pytest.raises(ValueError, match="only one of.*--sparsity.*--threshold"):
        make_target(sparsity=0.5, threshold=1.0)


def test_compression_becomes_the_weight_sparsity_that_keeps_the_biases():
    net = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 2))  # 120 weights, 12 biases
    s = weight_sparsity_for(net, 4.0)
    kept = 132 / 4 - 12
    assert s.value == pytest.approx(1 - kept / 120)


def test_unit_sparsity_search_reaches_the_ratio():
    best, s, info = search_unit_sparsity(1000, 4.0, lambda sp: 1000 - int(900 * sp.value), lambda n: n)
    assert info["target_reached"] and 1000 / best >= 4.0 and s < 0.9
    _, _, info = search_unit_sparsity(1000, 100.0, lambda sp: 200, lambda n: n)
    assert not info["target_reached"] and info["reached_compression"] == pytest.approx(5.0)
