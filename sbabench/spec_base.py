"""What every model read from a suite file shares: strictness and the shape of a name."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=80)]
"""A name that is safe as a folder name (models, operator labels, suites)."""


class StrictModel(BaseModel):
    """Unknown keys are errors and values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
