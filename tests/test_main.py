"""`python -m sbabench`: the current folder goes last on the import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_stray_module_in_the_current_folder_shadows_nothing(tmp_path: Path) -> None:
    sentinel = tmp_path / "shadowed"
    for name in ("click", "rich", "pydantic"):  # what the command line imports first
        (tmp_path / f"{name}.py").write_text(
            f"open({str(sentinel)!r}, 'w').close()\nraise ImportError('shadowed')\n"
        )
    done = subprocess.run(
        [sys.executable, "-m", "sbabench", "--help"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "validate" in done.stdout and not sentinel.exists()
