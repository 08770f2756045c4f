"""Where a finished study's time went: its trials against the training of its networks (issue 17).

    python benchmarks/study_timing.py STUDY_DIR [--json OUT]

Reads STUDY_DIR/results.csv (one row per trial) and the ``metrics.json`` of every trained
network under STUDY_DIR/runs. A trial's time (``trial_seconds``) is split into the method's own
training (``seconds - train_seconds``: IMP's and the lottery's retraining, fine-tuning) and the
rest, the measurement (posterior predictive on the test and OOD sets, latency, compression
report). Sums are worker seconds (one worker = one process).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import pandas as pd


def study_timing(study: Path) -> dict:
    table = pd.read_csv(study / "results.csv")
    training = {str(p.parent.relative_to(study / "runs")): float(json.loads(p.read_text()).get("train_seconds") or
                                                                  json.loads(p.read_text())["seconds"])
                for p in sorted((study / "runs").glob("**/metrics.json"))}
    per_method: dict[str, dict] = defaultdict(lambda: {"trials": 0, "trial_seconds": 0.0, "method_training_seconds": 0.0})
    for row in table.itertuples():
        own = max(0.0, float(row.seconds) - float(row.train_seconds)) if row.status == "ok" else 0.0
        m = per_method[row.method]
        m["trials"] += 1
        m["trial_seconds"] += float(row.trial_seconds)
        m["method_training_seconds"] += own
    trials = sum(m["trial_seconds"] for m in per_method.values())
    retraining = sum(m["method_training_seconds"] for m in per_method.values())
    networks = sum(training.values())
    return {"study": str(study), "trials": int(len(table)), "failed": int((table.status != "ok").sum()),
            "network_training_seconds": training, "network_training_total": networks,
            "trial_seconds_total": trials, "method_training_seconds_in_trials": retraining,
            "measurement_seconds": trials - retraining,
            "ratio_trials_to_network_training": trials / networks,
            "ratio_measurement_to_network_training": (trials - retraining) / networks,
            "ratio_measurement_to_all_training": (trials - retraining) / (networks + retraining),
            "per_method": dict(sorted(per_method.items()))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study_dir")
    p.add_argument("--json", default=None, help="write the summary here")
    args = p.parse_args(argv)
    out = study_timing(Path(args.study_dir))
    print(json.dumps({k: v for k, v in out.items() if k != "per_method"}, indent=1))
    if args.json:
        from pyrocompress.runs import write_json

        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
