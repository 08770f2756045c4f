"""A method with its own training recipe: trained once, from the deterministic twin, with its epochs counted."""
import json

import pandas as pd
import pytest

from pyrocompress.study.config import parse_config
from pyrocompress.study.runner import run_study

from conftest import TINY

#: a whole (tiny) study
pytestmark = pytest.mark.slow

RECIPES = TINY.replace("seeds = [0, 1]", "seeds = [0]").replace(
    '[[methods]]\nname = "magnitude"\nfamily = "magnitude"\n', '''
[[methods]]
name = "bnn-twin"
family = "bayes"
score = "snr"
[methods.train]
init_from = "deterministic"
epochs = 2

[[methods]]
name = "bnn-twin-neurons"
family = "bayes"
score = "snr"
structure = "neuron"
[methods.train]
epochs = 2
init_from = "deterministic"
''')


def test_recipes_are_trained_once_after_their_twin_and_every_row_counts_its_epochs(tmp_path):
    cfg = parse_config(RECIPES)
    result = run_study(cfg, tmp_path / "s", progress=False)
    assert result.ok
    label = cfg.methods[1].recipe.label
    # a deterministic twin trained for the recipe's total epochs (1 of pre-training + 2) is the reference at
    # equal epochs
    twin3 = [r for r in cfg.recipes() if r.kind.value == "deterministic" and r.overrides == {"epochs": 3}]
    assert len(twin3) == 1
    runs = sorted(p.name for p in (tmp_path / "s" / "runs" / "digits" / "mlp" / "seed0").iterdir())
    # the two methods share one recipe network
    assert runs == sorted(["bayesian", "deterministic", label, twin3[0].label])
    config = json.loads((tmp_path / "s" / "runs" / "digits" / "mlp" / "seed0" / label / "config.json").read_text())
    assert config["train"]["init_from"].endswith("seed0/deterministic") and config["train"]["epochs"] == 2
    table = pd.read_csv(tmp_path / "s" / "results.csv").set_index("trial_id")
    dense = table.loc[f"digits__mlp__s0__dense-{label}__1x"]
    assert dense["recipe"] == label and dense["pretrain_epochs"] == 1 and dense["train_epochs"] == 2
    twin = table[table["method"] == "bnn-twin"]
    assert (twin["pretrain_epochs"] == 1).all() and (twin["train_epochs"] == 2).all()
    assert (twin["epochs"] == twin["pretrain_epochs"] + twin["train_epochs"] + twin["finetune_epochs"]).all()
    plain = table[table["method"] == "bnn-snr"]
    assert (plain["pretrain_epochs"] == 0).all() and (plain["recipe"] == "bayesian").all()

    # the report reads every method against the strongest dense network at its total epochs
    from pyrocompress.study.report import load_results, tolerance_table

    frame, _ = load_results(tmp_path / "s")
    rows = {r["method"]: r for r in tolerance_table(frame, ["bnn-twin", "bnn-snr"])}
    assert rows["bnn-twin"]["epochs"] == 3 and rows["bnn-twin"]["reference"]["equal_epochs"]
    assert rows["bnn-twin"]["reference"]["method"] in (f"dense-{label}", f"dense-{twin3[0].label}")
    dense3 = frame[frame["method"].isin([f"dense-{label}", f"dense-{twin3[0].label}"])]
    assert rows["bnn-twin"]["dense_accuracy"] == pytest.approx(float(dense3.groupby("method")["accuracy"].mean().max()))
    assert rows["bnn-snr"]["reference"]["method"] in ("dense-bayesian", "dense-deterministic")
