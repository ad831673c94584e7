"""What every model read from a suite file shares: strictness and the shape of a name."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from sbabench.paths import NAME_MAX, NAME_PATTERN, check_no_dotdot

Name = Annotated[
    str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX), AfterValidator(check_no_dotdot)
]
"""A name that is safe as a folder or file name (suites, models, operator labels, tasks):
`sbabench.paths.NAME_PATTERN`."""


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
