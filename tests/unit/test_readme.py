"""The README starts with the two commands, and CI runs the second."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```sh\n")[1:3]
    return [b.split("\n```")[0].strip() for b in blocks]


def test_readme_opens_with_setup_plus_demo_and_setup_plus_tests():
    demo, tests = _commands()
    assert demo == "bash scripts/setup.sh && .venv/bin/vnetctl demo"
    assert tests == "bash scripts/setup.sh && .venv/bin/python -m pytest"
    first_block = (ROOT / "README.md").read_text().index("```")
    assert "## " not in (ROOT / "README.md").read_text()[:first_block]  # nothing comes before them


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci
