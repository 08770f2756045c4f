"""A tiny study (digits, 2 methods, 2 operating points, 2 seeds, 1 epoch) shared by the study tests."""
import os

import pytest

# Ray in the tests stays on the loopback interface (Ray otherwise binds to the machine's address); set before
# ray is first imported
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

TINY = """
[study]
name = "tiny"
seeds = [0, 1]
eval_samples = 4
latency_repeats = 0

[[datasets]]
name = "digits"
limit = 300

[[models]]
name = "mlp"
options = { hidden = [24, 24] }

[train]
epochs = 1
batch_size = 64
lr = 0.01

[grid]
compression = [2, 8]

[[methods]]
name = "bnn-snr"
family = "bayes"
score = "snr"

[[methods]]
name = "magnitude"
family = "magnitude"
"""

#: 2 seeds x (2 dense + 2 methods x 2 points)
TINY_TRIALS = 2 * (2 + 2 * 2)


@pytest.fixture
def tiny_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path
