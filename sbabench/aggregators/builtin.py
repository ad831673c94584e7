"""The built-in operators, registered with their option schemas.

Each names its function (`module:function`), so that validating a suite's operators and
options, and keying them, imports no torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sbabench.aggregators.base import AggregatorInfo, register


class EpsOptions(BaseModel):
    """Options shared by the spherical operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eps: float = Field(1e-6, gt=0, le=1e-2, description="floor for norms and the gate mass")


class KarcherOptions(EpsOptions):
    """Options of the iterative intrinsic barycentre."""

    iters: int = Field(20, ge=1, le=1000, description="maximum fixed-point iterations")
    tol: float = Field(1e-6, gt=0, description="stop when the largest tangent step is below this")


_SPHERICAL = "sbabench.aggregators.spherical"


register(
    AggregatorInfo(
        "linear", f"{_SPHERICAL}:linear", "weighted linear sum sum_i w_i y_i (the model's own)"
    )
)
register(
    AggregatorInfo(
        "sba",
        f"{_SPHERICAL}:sba",
        "Spherical Barycentric Aggregation: gate mass x mean radius x normalised mean direction",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "sba-karcher",
        f"{_SPHERICAL}:sba_karcher",
        "SBA with the intrinsic (Karcher/Frechet) spherical mean, iterative",
        KarcherOptions,
    )
)
register(
    AggregatorInfo(
        "sba-fused",
        f"{_SPHERICAL}:sba_fused",
        "SBA compiled into one kernel (torch.compile) that reads the expert outputs once; "
        "float32 throughout",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "slerp",
        f"{_SPHERICAL}:slerp",
        "SBA with a slerp direction: exact geodesic mean for k=2, incremental for k>2",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "radius-only",
        f"{_SPHERICAL}:radius_only",
        "ablation: linear direction, SBA's mean radius",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "direction-only",
        f"{_SPHERICAL}:direction_only",
        "ablation: SBA's spherical direction, linear radius",
        EpsOptions,
    )
)
