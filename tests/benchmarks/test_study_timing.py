"""benchmarks/study_timing.py splits a study's trial time into the methods' retraining and the measurement."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("study_timing", ROOT / "benchmarks" / "study_timing.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_trial_time_is_split_into_retraining_and_measurement(tmp_path):
    for kind, seconds in (("bayesian", 30.0), ("deterministic", 10.0)):
        run = tmp_path / "runs" / "digits" / "mlp" / "seed0" / kind
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"train_seconds": seconds, "seconds": seconds + 1}))
    pd.DataFrame([
        # a one-shot trial: no training of its own, 6 s of measurement
        {"method": "bnn-snr", "seconds": 30.5, "train_seconds": 30.0, "trial_seconds": 6.0, "status": "ok"},
        # IMP: 12 s of retraining inside a 15 s trial
        {"method": "imp", "seconds": 22.0, "train_seconds": 10.0, "trial_seconds": 15.0, "status": "ok"},
        # a failed trial counts its time, none of it as retraining
        {"method": "imp", "seconds": 0.0, "train_seconds": 0.0, "trial_seconds": 2.0, "status": "error"},
    ]).to_csv(tmp_path / "results.csv", index=False)
    out = _module().study_timing(tmp_path)
    assert out["network_training_total"] == pytest.approx(40.0)
    assert out["trial_seconds_total"] == pytest.approx(23.0)
    assert out["method_training_seconds_in_trials"] == pytest.approx(12.5)
    assert out["measurement_seconds"] == pytest.approx(10.5)
    assert out["ratio_trials_to_network_training"] == pytest.approx(23.0 / 40.0)
    assert out["ratio_measurement_to_all_training"] == pytest.approx(10.5 / 52.5)
    assert out["per_method"]["imp"] == {"trials": 2, "trial_seconds": 17.0, "method_training_seconds": 12.0}
    assert out["failed"] == 1
