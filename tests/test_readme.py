"""The README's first lines give the two set-up commands; .ci/run runs the test one verbatim."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()[:12]
    return [line.strip() for line in lines if line.startswith("    ")]


def test_two_commands_at_the_top():
    commands = readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert main_job.endswith("&& trimode demo") and "pip install" in main_job
    assert "pytest" in tests and '".[test]"' in tests


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]
