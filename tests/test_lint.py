"""The code passes the linter (pyflakes, bugbear, import order), as CI will check."""

import subprocess
import sys
from pathlib import Path


def test_ruff_finds_nothing() -> None:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
