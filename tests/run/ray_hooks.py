"""Set up in every Ray worker process of the tests: log each path the worker opens for writing
(or renames onto), so a test can show that workers never write into the results folder."""

from __future__ import annotations

import os
import sys
from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _writes(event: str, args: tuple[Any, ...]) -> str | None:
    if event == "open" and len(args) >= 3:
        path, mode, flags = args[0], args[1], args[2]
        writing = (
            any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        )
        return str(path) if writing else None
    if event in ("os.rename", "os.replace", "shutil.move", "os.link") and len(args) >= 2:
        return str(args[1])
    if event == "sqlite3.connect" and args:
        return str(args[0])
    return None


def watch_writes() -> None:
    """Append every written path to the file named by $SBABENCH_TEST_WRITES."""
    log = os.environ.get("SBABENCH_TEST_WRITES")
    if not log:
        return

    def hook(event: str, args: tuple[Any, ...]) -> None:
        path = _writes(event, args)
        if path is not None and path != log:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\t{path}\n")

    sys.addaudithook(hook)
