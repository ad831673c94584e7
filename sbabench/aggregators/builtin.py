"""The built-in operators, registered with their option schemas.

Building an operator imports torch; validating a suite's operators and options does not.
"""

from __future__ import annotations

from functools import partial

from pydantic import BaseModel, ConfigDict, Field

from sbabench.aggregators.base import AggregatorFn, AggregatorInfo, NoOptions, register


class EpsOptions(BaseModel):
    """Options shared by the spherical operators."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eps: float = Field(1e-6, gt=0, le=1e-2, description="floor for norms and the gate mass")


class KarcherOptions(EpsOptions):
    """Options of the iterative intrinsic barycentre."""

    iters: int = Field(20, ge=1, le=1000, description="maximum fixed-point iterations")
    tol: float = Field(1e-6, gt=0, description="stop when the largest tangent step is below this")


def _linear(_: NoOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return spherical.linear


def _sba(options: EpsOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.sba, eps=options.eps)


def _sba_fused(options: EpsOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.sba_fused, eps=options.eps)


def _radius_only(options: EpsOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.radius_only, eps=options.eps)


def _direction_only(options: EpsOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.direction_only, eps=options.eps)


def _karcher(options: KarcherOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.sba_karcher, eps=options.eps, iters=options.iters, tol=options.tol)


def _slerp(options: EpsOptions) -> AggregatorFn:
    from sbabench.aggregators import spherical  # torch loads only when an operator runs

    return partial(spherical.slerp, eps=options.eps)


register(AggregatorInfo("linear", _linear, "weighted linear sum sum_i w_i y_i (the model's own)"))
register(
    AggregatorInfo(
        "sba",
        _sba,
        "Spherical Barycentric Aggregation: gate mass x mean radius x normalised mean direction",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "sba-karcher",
        _karcher,
        "SBA with the intrinsic (Karcher/Frechet) spherical mean, iterative",
        KarcherOptions,
    )
)
register(
    AggregatorInfo(
        "sba-fused",
        _sba_fused,
        "SBA compiled into one kernel (torch.compile) that reads the expert outputs once; "
        "float32 throughout",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "slerp",
        _slerp,
        "SBA with a slerp direction: exact geodesic mean for k=2, incremental for k>2",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "radius-only",
        _radius_only,
        "ablation: linear direction, SBA's mean radius",
        EpsOptions,
    )
)
register(
    AggregatorInfo(
        "direction-only",
        _direction_only,
        "ablation: SBA's spherical direction, linear radius",
        EpsOptions,
    )
)
