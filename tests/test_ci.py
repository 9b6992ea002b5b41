"""The README's test command is exactly what CI runs (``.ci/run``), so that a new user runs what CI does."""

from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_test_command() -> list[str]:
    """The lines of the README's code block under the comment that says ``what CI runs``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and "what CI runs" in line) + 1
    return lines[start: lines.index("```", start)]


def ci_command() -> list[str]:
    """The lines of ``.ci/run`` after it changes to the repository root."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return lines[lines.index('cd "$(dirname "$0")/.."') + 1:]


def test_the_readme_test_command_is_what_ci_runs():
    assert readme_test_command() == ci_command()
    assert any('pip install -e ".[test,web]"' in line for line in ci_command())  # the serve tests run too
