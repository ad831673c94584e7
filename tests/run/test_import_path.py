"""Ray workers get the driver's import path with its current folder last: a user operator there
imports, a stray `torch.py` there shadows nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sbabench.run import import_path, ray_executor

ROOT = Path(__file__).resolve().parents[2]


def _folder_with_strays(tmp_path: Path) -> tuple[Path, Path]:
    """A driver folder holding a user operator module and a `torch.py` that would leave a
    sentinel file behind if it were ever imported."""
    driver, sentinel = tmp_path / "driver", tmp_path / "shadowed"
    driver.mkdir()
    (driver / "planted_op.py").write_text("def op(outputs, weights):\n    return outputs[:, 0]\n")
    (driver / "torch.py").write_text(f"open({str(sentinel)!r}, 'w').close()\nraise ImportError\n")
    return driver, sentinel


def _python(code: str, cwd: Path, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_worker_imports_the_drivers_user_operator_but_not_its_stray_torch(
    tmp_path: Path,
) -> None:
    driver, sentinel = _folder_with_strays(tmp_path)
    path = _python("from sbabench.run.import_path import driver_path; print(driver_path())", driver)
    assert path.split(os.pathsep)[-1] == str(driver)
    worker = tmp_path / "worker"
    worker.mkdir()
    code = (
        "from sbabench.run.import_path import adopt_driver_path; adopt_driver_path()\n"
        "import torch, planted_op; print(torch.__file__); print(planted_op.__file__)"
    )
    torch_file, op_file = _python(code, worker, SBABENCH_DRIVER_PATH=path).splitlines()
    assert not sentinel.exists() and "site-packages" in torch_file
    assert op_file == str(driver / "planted_op.py")


def test_a_worker_ray_started_in_the_drivers_folder_moves_it_last(tmp_path: Path) -> None:
    """Ray itself puts the driver's current folder first on a worker's path (its job config's
    driver sys.path): adopting the driver's path moves it behind the installed packages."""
    driver, sentinel = _folder_with_strays(tmp_path)
    path = _python("from sbabench.run.import_path import driver_path; print(driver_path())", driver)
    worker = tmp_path / "worker"
    worker.mkdir()
    code = (
        f"import sys; sys.path.insert(0, {str(driver)!r})\n"  # what Ray's worker setup does
        "from sbabench.run.import_path import adopt_driver_path; adopt_driver_path()\n"
        "import torch, planted_op; print(torch.__file__); print(planted_op.__file__)"
    )
    torch_file, op_file = _python(code, worker, SBABENCH_DRIVER_PATH=path).splitlines()
    assert not sentinel.exists() and "site-packages" in torch_file
    assert op_file == str(driver / "planted_op.py")


def test_ray_is_started_with_the_current_folder_last_and_not_on_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: dict[str, Any] = {}

    class _Ray:
        def is_initialized(self) -> bool:
            return False

        def init(self, **kwargs: Any) -> None:
            started.update(kwargs)

        def shutdown(self) -> None:
            pass

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), "/opt/libs", "."]))
    monkeypatch.setattr(ray_executor, "_ray", _Ray)
    with ray_executor._connected(None, None):
        pass
    env = started["runtime_env"]["env_vars"]
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/opt/libs"]  # ROOT: sbabench
    assert env[import_path.ENV].split(os.pathsep)[-1] == str(tmp_path)
    assert str(tmp_path) not in env[import_path.ENV].split(os.pathsep)[:-1]
