"""README: its Python quickstart runs, and .ci/run runs exactly its test command."""
import re
from pathlib import Path

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
