"""One method, one network, one seed: `pyrocompress prune` and a study trial give the same numbers.

Both front doors build the method through the one registry and run the same code; this checks
it end to end: a tiny study, then the CLI on the study's own trained networks with the
trial's seed and the study's operating point (``--compression``).
"""
import json

import pandas as pd
import pytest

from pyrocompress.cli import main
from pyrocompress.infer.predictive import resolve_eval_estimator
from pyrocompress.metrics import classification_metrics
from pyrocompress.prune.methods import Pruned
from pyrocompress.runs import load_run
from pyrocompress.study.config import parse_config
from pyrocompress.study.measure import probs_of
from pyrocompress.study.plan import seed_of
from pyrocompress.study.runner import run_study

STUDY = """
[study]
name = "same"
seeds = [0]
eval_samples = 4
latency_repeats = 0

[[datasets]]
name = "digits"
limit = 300
ood = "none"

[[models]]
name = "mlp"
options = { hidden = [24, 24] }

[train]
epochs = 1
batch_size = 64
lr = 0.01

[grid]
compression = [4]

[[methods]]
name = "magnitude"
family = "magnitude"

[[methods]]
name = "bnn-neurons"
family = "bayes"
score = "snr"
structure = "neuron"
finetune_epochs = 1
"""


@pytest.mark.slow  # a whole (tiny) study
def test_prune_cli_and_study_give_the_same_numbers(tmp_path):
    study = tmp_path / "study"
    assert run_study(parse_config(STUDY), study, progress=False).ok
    rows = pd.read_csv(study / "results.csv").set_index("method")
    runs = study / "runs" / "digits" / "mlp" / "seed0"

    # a deterministic method: the CLI's test metrics are the trial's
    mag = rows.loc["magnitude"]
    out = tmp_path / "mag"
    seed = seed_of("digits", "mlp", 0, "magnitude", "4x")
    assert main(["prune", str(runs / "deterministic"), "--method", "magnitude", "--compression", "4", "--seed",
                 str(seed), "--no-latency", "--out", str(out)]) == 0
    cli = json.loads((out / "metrics.json").read_text())
    assert cli["accuracy"] == mag["accuracy"]
    assert cli["nll"] == pytest.approx(mag["nll"], rel=1e-6) and cli["ece"] == pytest.approx(mag["ece"], rel=1e-6)
    assert cli["mask_sparsity"] == pytest.approx(json.loads(mag["info"])["mask_sparsity"])

    # a Bayesian method with SVI fine-tuning: the CLI's pruned model and guide are the trial's, draw for draw
    bnn = rows.loc["bnn-neurons"]
    out = tmp_path / "bnn"
    seed = seed_of("digits", "mlp", 0, "bnn-neurons", "4x")
    assert main(["prune", str(runs / "bayesian"), "--method", "bayes", "--score", "snr", "--structure", "neuron",
                 "--compression", "4", "--finetune-epochs", "1", "--seed", str(seed), "--no-latency",
                 "--eval-samples", "4", "--out", str(out)]) == 0
    cli = json.loads((out / "metrics.json").read_text())
    assert cli["params"] == bnn["params"] and cli["nonzero_params"] == bnn["nonzero_params"]
    small = load_run(out / "bayesian")
    data = small.load_data()
    estimator = resolve_eval_estimator("auto", small.config["train"]["estimator"])  # as the study drew it
    probs = probs_of(Pruned(model=small.model, guide=small.guide), data.test.x, 4, seed_of("eval", "digits", "mlp", 0),
                     estimator)
    again = classification_metrics(probs, data.test.y)
    assert again["accuracy"] == bnn["accuracy"]
    # float32 draws, the loaded tensors laid out anew: equal to float precision
    assert again["nll"] == pytest.approx(bnn["nll"], rel=1e-6) and again["ece"] == pytest.approx(bnn["ece"], rel=1e-6)
    assert cli["epochs"]["finetune_epochs"] == bnn["finetune_epochs"] == 1
