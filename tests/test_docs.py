"""The API reference is generated from the current docstrings."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, "docs/build_api.py", "--check"], cwd=ROOT)
    assert proc.returncode == 0, "docs/api.md is stale: run `python docs/build_api.py`"
