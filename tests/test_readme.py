"""README: its Python quickstart runs, and .ci/run runs exactly its test command."""
import re
from pathlib import Path

import pytest

#: the README's quickstarts run end to end
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_python_quickstart_runs():
    blocks = _blocks("python")
    assert blocks, "README has no python block"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_ci_runs_exactly_the_readme_test_command():
    bash = _blocks("bash")
    test_cmd = [line for block in bash for line in block.splitlines() if "pytest" in line and not line.startswith("#")]
    assert len(test_cmd) == 1, test_cmd
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0].strip() in [line.strip() for line in ci_lines]
    main_cmd = bash[0].strip().splitlines()[-1]
    assert main_cmd.startswith("pip install torch==2.13.0 && pip install -e . && pyrocompress ")


def test_readme_cli_quickstart_runs(tmp_path):
    """Every line of the CLI quickstart runs (in a scratch folder) and exits 0."""
    import shlex
    import subprocess
    import sys

    block = [b for b in _blocks("bash") if "pyrocompress train" in b]
    assert block, "README has no CLI quickstart"
    for line in block[0].splitlines():
        command = line.split("#")[0].strip()
        if not command:
            continue
        for part in command.split("&&"):
            argv = shlex.split(part)
            assert argv[0] == "pyrocompress", argv
            proc = subprocess.run([sys.executable, "-m", "pyrocompress", *argv[1:]], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, (part, proc.stderr[-2000:])
    assert (tmp_path / "studies" / "default" / "report" / "report.html").is_file()
    assert (tmp_path / "runs" / "mlp-sc" / "metrics.json").is_file()
