"""The docs follow the code and the data: the API reference from the current docstrings, result tables from their JSON."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, "docs/build_api.py", "--check"], cwd=ROOT)
    assert proc.returncode == 0, "docs/api.md is stale: run `python docs/build_api.py`"


def test_sparse_vd_tables_in_results_come_from_the_committed_json():
    """docs/results.md section 7 prints exactly what experiments/sparse_vd/table.py makes of measured/."""
    proc = subprocess.run([sys.executable, "experiments/sparse_vd/table.py"], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    results = (ROOT / "docs" / "results.md").read_text()
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(rows) > 15
    missing = [row for row in rows if row not in results]
    assert not missing, f"rows of table.py not in docs/results.md (rerun the table): {missing}"
