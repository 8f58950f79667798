"""The code passes `make audit`, as CI will check: ruff's linter (pyflakes, bugbear, import
order), ruff's formatter, and mypy (configured in pyproject.toml: strict for the message
types, the consumer contract and the grid's pure core)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing() -> None:
    out = run("ruff", "check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_would_change_nothing() -> None:
    out = run("ruff", "format", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_finds_nothing() -> None:
    out = run("mypy")
    assert out.returncode == 0, out.stdout + out.stderr
