"""The one exception family for mistakes a user can fix (bad suite, missing data, bad options)."""

from __future__ import annotations


class SbabenchError(Exception):
    """A user error: says what is wrong, where, and how to fix it.

    The CLI prints it without a traceback and exits with code 2. Bugs raise other exceptions.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        """One readable message: `where: what` plus a `fix:` hint when there is one."""
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class SuiteError(SbabenchError):
    """The suite file is not valid; may carry several located problems."""

    def __init__(self, problems: list[str], *, path: str) -> None:
        self.problems = problems
        self.path = path
        head = f"{path}: {len(problems)} problem(s) in suite"
        super().__init__(head + "\n" + "\n".join(f"  {p}" for p in problems))

    def render(self) -> str:
        return self.what


class TaskDataError(SbabenchError):
    """A task's data could not be read or is not usable."""


class ModelSpecError(SbabenchError):
    """A model could not be built or has no MoE layer we can patch."""


class AggregatorError(SbabenchError):
    """An aggregator name, option or user operator is not usable."""


class StorageError(SbabenchError):
    """A results folder (or a cache in it) that cannot be written: read-only, no permission, a
    full disk, or a file a newer sbabench wrote. Nothing in it was moved or overwritten."""
