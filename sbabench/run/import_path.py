"""The import path Ray workers get from the driver: the current folder last.

A user operator (`myops:fn`) may live in the folder `sbabench run` starts in, so workers need
that folder on their import path; but a stray `torch.py` or `sbabench.py` there must shadow
nothing. Entries go at the end of the worker's own path (after its site-packages), the driver's
current folder the very last, so installed packages always win. One folder goes first: the one
sbabench itself is imported from when it is not installed (a source checkout), since a worker
imports sbabench to start at all.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

ENV = "SBABENCH_DRIVER_PATH"
"""The environment variable that carries the driver's import path to its workers."""


def driver_path() -> str:
    """The driver's import path, its current folder moved last (os.pathsep-joined)."""
    here = os.getcwd()
    kept = [entry for entry in sys.path if entry not in ("", ".", here)]
    return os.pathsep.join([*kept, here])


def adopt_driver_path() -> None:
    """In a worker: append the driver's entries the worker lacks, in order (nothing moves
    ahead of what the worker already imports from). Ray itself puts the driver's current (and
    script) folder first on a worker's path: every entry the driver's path lists after its
    installed packages is moved to the end, so none of them shadows an installed package."""
    entries = list(filter(None, os.environ.get(ENV, "").split(os.pathsep)))
    installed = {str(Path(p)) for p in (*site.getsitepackages(), *sysconfig.get_paths().values())}
    last_installed = max(
        (i for i, e in enumerate(entries) if str(Path(e)) in installed), default=-1
    )
    own = package_folder()
    moved = [e for e in entries[last_installed + 1 :] if e != own]
    sys.path[:] = [e for e in sys.path if e not in moved and e not in ("", ".")]
    for entry in [e for e in entries if e not in sys.path and e not in moved] + moved:
        sys.path.append(entry)


def without_current_folder(value: str | None) -> str:
    """A PYTHONPATH value less its entries that name the current folder ('', '.', cwd)."""
    here = os.getcwd()
    entries = (value or "").split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and e != "." and os.path.abspath(e) != here)


def package_folder() -> str | None:
    """The folder holding the `sbabench` package, unless it is an installed package's folder
    (then a worker finds sbabench by itself)."""
    folder = Path(__file__).resolve().parents[2]
    paths = sysconfig.get_paths()
    installed = [*site.getsitepackages(), paths["purelib"], paths["platlib"]]
    return None if folder in {Path(p).resolve() for p in installed} else str(folder)


def worker_pythonpath(value: str | None) -> str:
    """A worker's PYTHONPATH: sbabench's own folder when not installed, then the driver's
    PYTHONPATH less the current folder (which `driver_path` puts last)."""
    entries = [package_folder(), without_current_folder(value)]
    return os.pathsep.join(e for e in entries if e)
