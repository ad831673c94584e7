"""Progress of a run, told through a plain callback: the library never prints.

The CLI turns these events into a progress bar; a notebook or a scheduler may log them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class EventKind(StrEnum):
    """What happened."""

    PLANNED = "planned"
    """`count` units will be computed."""
    NOTE = "note"
    """Something a user should know (`message`): a stale file recomputed, units skipped."""
    UNIT_STARTED = "unit-started"
    """Unit `label` begins."""
    PHASE = "phase"
    """Unit `label` entered a long step without its own counter (`message`)."""
    TEXTS = "texts"
    """`count` texts are about to be run through the model."""
    BATCH = "batch"
    """`count` more texts were run through the model."""
    UNIT_FINISHED = "unit-finished"
    """Unit `label` has its result."""
    UNIT_FAILED = "unit-failed"
    """Unit `label` failed (`message` says why); the others go on."""
    UNIT_ELSEWHERE = "unit-elsewhere"
    """Unit `label` is being computed by another process."""


@dataclass(frozen=True)
class Event:
    """One progress event."""

    kind: EventKind
    label: str = ""
    """The unit (`model/aggregator/task`), when the event is about one."""
    count: int = 0
    message: str = ""


ProgressCallback = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The default callback: report nothing."""
