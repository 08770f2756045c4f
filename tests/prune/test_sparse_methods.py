"""The sparsity-prior routes: sparse variational dropout and Bayesian Compression, through the registry,
the command line and a study's training recipes."""
import json

import pytest
import torch

from pyrocompress.cli import main
from pyrocompress.prune.methods import Context, build_method
from pyrocompress.runs import load_run


def _train(out, prior, hidden="[48]", epochs="8"):
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--model-option", f"hidden={hidden}",
                 "--prior", prior, "--epochs", epochs, "--lr", "0.01", "--device", "cpu", "--out", str(out),
                 "--quiet", "--eval-samples", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def svd_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs") / "svd", "log_uniform")


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs") / "bc", '{"default": "group_horseshoe", "output": "log_uniform"}',
                  hidden="[64]", epochs="15")


def test_sparse_vd_deletes_exactly_the_weights_the_prior_rule_marks(svd_run):
    run = load_run(svd_run)
    expected = {}
    for name, layer in run.model.bayes_layers():
        la = layer.prior.log_alpha(run.guide.loc_of(f"{name}.weight"), run.guide.scale_of(f"{name}.weight"))
        expected[name] = la.detach() <= 3.0
    pruned = build_method("sparse-vd").run(Context.of_run(run), None)
    for name, keep in expected.items():
        kept = pruned.guide.loc_of(f"{name}.weight").detach() != 0
        # shrinking may drop whole units; the weights that stay are exactly the rule's
        assert int(kept.sum()) <= int(keep.sum())
    nonzero = sum(int((pruned.guide.loc_of(f"{n}.weight") != 0).sum()) for n, _ in pruned.model.bayes_layers())
    assert nonzero == sum(int(k.sum()) for k in expected.values())
    assert pruned.finetune_epochs == 0 and pruned.info["method"] == "sparse_vd"


def test_sparse_vd_ranks_by_log_alpha_at_a_compression_target(svd_run, tmp_path):
    out = tmp_path / "svd16"
    assert main(["prune", str(svd_run), "--method", "sparse-vd", "--compression", "16", "--no-latency",
                 "--eval-samples", "4", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # at least the target: units left without weights are then deleted physically, with their biases
    assert 16 * 0.98 <= metrics["compression_ratio"] < 25
    assert metrics["method"] == "sparse_vd" and metrics["score"] == "log_alpha"


def test_bayesian_compression_deletes_units_physically(bc_run, tmp_path):
    out = tmp_path / "bc"
    assert main(["prune", str(bc_run), "--method", "bc", "--no-latency", "--eval-samples", "4", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # the horseshoe's rule: the units whose posterior-mean norm is at least 5% of the layer's largest stay
    run = load_run(bc_run)
    norms = run.guide.loc_of("fc1.weight").detach().flatten(1).norm(dim=1)
    assert metrics["units"]["fc1"] == int((norms >= 0.05 * norms.max()).sum()) < 64
    assert metrics["units"]["fc2"] == 10  # the output layer keeps its classes
    # the switched-off units carried nothing: the shrunk network predicts as the dense one did
    assert metrics["accuracy"] >= metrics["dense"]["accuracy"] - 0.03
    assert metrics["score"] == "relative_norm" and metrics["weight_mask_sparsity"] > 0


def test_the_routes_refuse_networks_trained_with_other_priors(svd_run, tmp_path, capsys):
    with pytest.raises(ValueError, match="group prior"):
        build_method("bayesian_compression").run(Context.of_run(load_run(svd_run)), None)
    normal = _train(tmp_path / "normal", "normal", epochs="1")
    assert main(["prune", str(normal), "--method", "sparse_vd", "--out", str(tmp_path / "x")]) == 2
    assert "--prior log_uniform" in capsys.readouterr().err


def test_recipes_carry_the_priors_and_study_overrides_win():
    svd = build_method("sparse_vd", {}, {"epochs": 30})
    assert svd.recipe().overrides["prior"] == "log_uniform" and svd.recipe().overrides["epochs"] == 30
    bc = build_method("bc", {"auto_threshold": False})
    assert bc.recipe().overrides["prior"]["default"] == "group_horseshoe" and bc.uses_grid()
    assert not build_method("sparse_vd").uses_grid()
