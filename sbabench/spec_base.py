"""What every model read from a suite file shares: strictness and the shape of a name."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=80)]
"""A name that is safe as a folder name (models, operator labels, suites)."""


class StrictModel(BaseModel):
    """Unknown keys are errors and values are immutable once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _replicate_count(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise ValueError(
            "how many times a model is rebuilt with other seeds: a whole number from 1 "
            "(no replicates) to 1000, written without quotes"
        )
    return value


ReplicateCount = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_replicate_count)]
"""`replicates:` of a suite or model: a whole number from 1 to 1000."""
