"""Names that become parts of paths, and paths kept under their folder.

A suite, and a results folder read back, are data: a name in them (a suite, model, operator
label or task) becomes a folder or file name, so it must not climb out of the folder it is
written under (`..`, `/`), hide (a leading dot), or carry bytes a file system treats specially
(NUL). One pattern, `NAME_PATTERN`, is what every such name must match; `confined` checks a
path built from names once more, after resolving symbolic links, before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path

from sbabench.errors import SbabenchError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
"""A name that is safe as a folder or file name: ASCII letters, digits, `.`, `_`, `+`, `-`,
starting with a letter or digit, at most `NAME_MAX` characters, never containing `..`."""
NAME_MAX = 128
NAME_RULE = (
    f"letters, digits, '.', '_', '+' or '-', starting with a letter or digit, at most "
    f"{NAME_MAX} characters, no '..'"
)
"""The pattern in words, for messages."""
_NAME = re.compile(NAME_PATTERN.removesuffix("$"))


def name_problem(value: object) -> str | None:
    """Why `value` is not a safe name, or None when it is."""
    if not isinstance(value, str):
        return f"a name must be text, got {type(value).__name__}"
    if len(value) > NAME_MAX:
        return f"{value[:40]!r}... is longer than {NAME_MAX} characters"
    if not _NAME.fullmatch(value) or ".." in value:
        return f"{value!r} is not a safe name (use {NAME_RULE})"
    if value.endswith(".error"):  # <task>.error.json is where a failure of <task> is recorded
        return f"{value!r} ends in '.error', which names failure records"
    return None


def check_no_dotdot(value: str) -> str:
    """A pydantic validator: the pattern cannot say `..` is refused (its regex has no
    look-around), so this does."""
    if ".." in value:
        raise ValueError(f"{value!r} is not a safe name: it contains '..' (use {NAME_RULE})")
    if value.endswith(".error"):  # <task>.error.json is where a failure of <task> is recorded
        raise ValueError(f"{value!r} ends in '.error', which names failure records")
    return value


def confined(root: Path, *parts: str) -> Path:
    """`root / parts`, after checking that it resolves (symbolic links followed) under
    `root` resolved, and that it is not itself a symbolic link: a user error otherwise."""
    path = root.joinpath(*parts)
    step = root
    for part in parts:  # a link at any step could map two names to one file
        step = step / part
        if step.is_symlink():
            raise SbabenchError(
                f"{step} is a symbolic link; sbabench does not write through links",
                where=str(step),
                fix="remove the link (sbabench makes its folders and files itself)",
            )
    inside = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(inside):
        raise SbabenchError(
            f"{path} resolves to {resolved}, outside {inside}",
            where=str(path),
            fix="rename what made the path (names: " + NAME_RULE + "), or remove the link",
        )
    return path
