"""The method registry: one class per family, options checked once into typed values, recipes, targets."""
import pytest

from pyrocompress.names import Kind, Schedule, Scope, Structure
from pyrocompress.prune.methods import (METHODS, OptionError, Recipe, build_method, check_method_fits, method_class,
                                        method_for_run, method_names)
from pyrocompress.prune.targets import AutoThreshold, Compression, Sparsity, Threshold


def test_every_family_builds_with_its_defaults_and_round_trips():
    assert method_names(references=False) == ["bayes", "bayesian_compression", "gradual", "imp", "lottery",
                                              "magnitude", "random", "self_compress", "sparse_vd"]
    for name in METHODS:
        method = build_method(name)
        again = build_method(name, {k: v for k, v in method.to_dict()["options"].items() if v is not None})
        assert again.to_dict() == method.to_dict()


def test_options_become_typed_values_and_aliases_resolve_in_one_place():
    m = build_method("score", {"score": "norm", "structure": "neurons", "scope": "per-layer", "ignore": "fc1"})
    assert m.name == "bayes" and m.options.score == "magnitude"
    assert m.options.structure is Structure.NEURON and m.options.scope is Scope.LAYER
    assert m.options.ignored_layers == ("fc1",)
    lot = build_method("lottery", {"epochs": 3, "schedule": "trajectory"})
    assert lot.options.train_epochs == 3 and lot.options.schedule is Schedule.TRAJECTORY


@pytest.mark.parametrize("name, options, key, message", [
    ("imp", {"rounds": 0}, "rounds", r"integer >= 1"),
    ("imp", {"rounds": True}, "rounds", r"integer >= 1"),
    ("magnitude", {"score": "snr"}, None, "needs a posterior"),
    ("magnitude", {"bogus": 1}, "bogus", r"unknown option 'bogus'.*valid options"),
    ("bayes", {"score": "snrr"}, "score", r"valid scores"),
    ("bayes", {"structure": "rows"}, "structure", r"valid structures"),
    ("lottery", {"structure": "neuron"}, None, "single weights"),
    ("lottery", {"rate": 1.0}, "rate", r"\(0, 1\)"),
    ("self_compress", {"mode": "twice"}, "mode", r"valid modes"),
])
def test_bad_options_name_the_key_and_the_valid_values(name, options, key, message):
    with pytest.raises(OptionError, match=message) as info:
        build_method(name, options)
    assert info.value.key == key


def test_which_network_a_method_starts_from():
    assert build_method("bayes").start() is Kind.BAYESIAN
    assert build_method("imp").start() is Kind.DETERMINISTIC
    assert build_method("magnitude", {"on": "bayesian"}).start() is Kind.BAYESIAN
    assert method_for_run("magnitude", {}, bayesian=True).options.on is Kind.BAYESIAN
    assert check_method_fits("dense", True) == "dense"
    with pytest.raises(ValueError, match="does not fit a Bayesian run.*--method magnitude"):
        method_for_run("random", {}, bayesian=True)
    with pytest.raises(ValueError, match="does not fit a deterministic run"):
        check_method_fits("self_compress", bayesian=False)
    with pytest.raises(ValueError, match="valid methods"):
        method_class("pruning")


def test_recipes_key_the_trained_network_by_kind_and_overrides():
    plain = build_method("bayes")
    svd = build_method("bayes", {"score": "log_alpha"}, {"prior": "log_uniform", "init_from": "deterministic"})
    same = build_method("self_compress", {}, {"init_from": "deterministic", "prior": "log_uniform"})
    assert plain.recipe() == Recipe(Kind.BAYESIAN) and plain.recipe().label == "bayesian"
    assert svd.recipe().label.startswith("bayesian-") and svd.recipe().label == same.recipe().label
    assert svd.recipe().init_from == "deterministic"
    with pytest.raises(OptionError, match=r"unknown training option 'epoch'.*valid options.*epochs"):
        build_method("bayes", {}, {"epoch": 3})
    with pytest.raises(OptionError, match="unknown training option 'model'"):
        build_method("imp", {}, {"model": "lenet5"})


def test_targets_each_method_accepts():
    build_method("bayes").check_target(Threshold(1.0))
    build_method("lottery").check_target(None)  # rate-based rounds without a target
    with pytest.raises(ValueError, match="needs --sparsity or --compression"):
        build_method("magnitude").check_target(None)
    with pytest.raises(ValueError, match="cannot prune to a threshold"):
        build_method("imp").check_target(Threshold(0.1))
    with pytest.raises(ValueError, match="one-shot rule"):
        build_method("self_compress", {"mode": "iterative"}).check_target(Sparsity(0.5))
    with pytest.raises(ValueError, match="trajectory"):
        build_method("lottery", {"schedule": "trajectory"}).check_target(Sparsity(0.5))
    auto = build_method("bayes", {"auto_threshold": True})
    assert not auto.uses_grid() and isinstance(auto.default_target(), AutoThreshold)
    assert build_method("self_compress", {"mode": "iterative"}).uses_grid() is False
    build_method("gradual").check_target(Compression(4))
