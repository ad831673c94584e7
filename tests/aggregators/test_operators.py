"""The operators: definitions, degenerate cases, dtypes, and properties (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sbabench.aggregators import registry, resolve
from sbabench.aggregators import spherical as S
from sbabench.errors import AggregatorError

SPHERICAL = ["sba", "sba-karcher", "slerp", "radius-only"]
ALL = list(registry())


@pytest.fixture(autouse=True)
def _sba_fused_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property tests run `sba-fused`'s expression eagerly (one compile per dtype and
    autograd mode would cost minutes); the tests below that empty `_COMPILED` compile."""
    monkeypatch.setitem(S._COMPILED, "sba", S.sba_single_pass)


def _batch(tokens: int, k: int, hidden: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    outputs = torch.randn(tokens, k, hidden, generator=gen, dtype=torch.float64)
    weights = torch.rand(tokens, k, generator=gen, dtype=torch.float64) + 0.05
    return outputs, weights


batches = st.builds(
    _batch,
    tokens=st.integers(1, 6),
    k=st.integers(1, 4),
    hidden=st.integers(2, 12),
    seed=st.integers(0, 10_000),
)


def test_linear_is_weighted_sum() -> None:
    outputs, weights = _batch(7, 3, 5, 0)
    expected = torch.stack([sum(weights[t, i] * outputs[t, i] for i in range(3)) for t in range(7)])
    torch.testing.assert_close(S.linear(outputs, weights), expected)


@given(batches)
@settings(max_examples=60, deadline=None)
def test_sba_norm_is_gate_mass_times_weighted_mean_norm(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    outputs, weights = batch
    mass = weights.sum(-1)
    mean_norm = (weights / mass[:, None] * outputs.norm(dim=-1)).sum(-1)
    torch.testing.assert_close(S.sba(outputs, weights).norm(dim=-1), mass * mean_norm)


@given(batches)
@settings(max_examples=60, deadline=None)
def test_sba_direction_is_unit_and_inside_the_cone(
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    outputs, weights = batch
    combined = S.sba(outputs, weights)
    direction = combined / combined.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(
        direction.norm(dim=-1), torch.ones(len(outputs), dtype=torch.float64)
    )
    # Inside the cone: a non-negative combination of the unit inputs, so it is at least as close
    # to their weighted mean direction as to its own antipode.
    units = outputs / outputs.norm(dim=-1, keepdim=True)
    mean = (weights[..., None] * units).sum(1)
    assert ((direction * mean).sum(-1) >= -1e-9).all()


@pytest.mark.parametrize("name", ALL)
@given(batch=batches)
@settings(max_examples=25, deadline=None)
def test_permutation_invariance(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Every operator, slerp included: its incremental direction follows the experts sorted by
    weight, not their slot order (random weights have no ties)."""
    outputs, weights = batch
    fn = resolve(name).fn
    perm = torch.randperm(outputs.shape[1], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fn(outputs, weights), fn(outputs[:, perm], weights[:, perm]))


@pytest.mark.parametrize("name", ALL)
@given(batch=batches)
@settings(max_examples=25, deadline=None)
def test_equal_inputs_give_linear(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    outputs, weights = batch
    same = outputs[:, :1].expand_as(outputs).clone()
    torch.testing.assert_close(resolve(name).fn(same, weights), S.linear(same, weights))


@given(
    batch=st.builds(
        _batch, st.integers(1, 6), st.just(2), st.integers(2, 12), st.integers(0, 10_000)
    )
)
@settings(max_examples=60, deadline=None)
def test_karcher_equals_slerp_for_two_experts(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    outputs, weights = batch
    karcher = S.sba_karcher(outputs, weights, iters=200, tol=1e-12)
    torch.testing.assert_close(karcher, S.slerp(outputs, weights), atol=1e-6, rtol=1e-6)


def test_ablations_split_the_two_effects() -> None:
    outputs, weights = _batch(9, 2, 6, 3)
    sba, lin = S.sba(outputs, weights), S.linear(outputs, weights)
    radius, direction = S.radius_only(outputs, weights), S.direction_only(outputs, weights)
    torch.testing.assert_close(radius.norm(dim=-1), sba.norm(dim=-1))
    torch.testing.assert_close(
        torch.nn.functional.normalize(radius, dim=-1), torch.nn.functional.normalize(lin, dim=-1)
    )
    torch.testing.assert_close(direction.norm(dim=-1), lin.norm(dim=-1))
    torch.testing.assert_close(
        torch.nn.functional.normalize(direction, dim=-1), torch.nn.functional.normalize(sba, dim=-1)
    )


@pytest.mark.parametrize("name", ALL)
def test_degenerate_inputs_stay_finite(name: str) -> None:
    fn = resolve(name).fn
    hidden = 4
    e = torch.eye(hidden)
    cases = {
        "zero outputs": (torch.zeros(2, 2, hidden), torch.full((2, 2), 0.5)),
        "one zero output": (
            torch.stack([torch.stack([e[0], torch.zeros(hidden)])]),
            torch.tensor([[0.6, 0.4]]),
        ),
        "opposite directions": (
            torch.stack([torch.stack([e[0], -e[0]])]),
            torch.tensor([[0.5, 0.5]]),
        ),
        "k=1": (torch.randn(3, 1, hidden), torch.rand(3, 1)),
        "all-zero weights": (torch.randn(3, 2, hidden), torch.zeros(3, 2)),
        "huge norms": (torch.randn(3, 2, hidden) * 1e30, torch.rand(3, 2)),
        "tiny norms": (torch.randn(3, 2, hidden) * 1e-30, torch.rand(3, 2)),
    }
    for case, (outputs, weights) in cases.items():
        combined = fn(outputs, weights)
        assert combined.shape == (outputs.shape[0], hidden), case
        assert torch.isfinite(combined).all(), case


@given(batches)
@settings(max_examples=60, deadline=None)
def test_the_single_pass_expression_is_sba(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    outputs, weights = batch
    torch.testing.assert_close(
        S.sba_single_pass(outputs, weights), S.sba(outputs, weights), atol=1e-12, rtol=1e-10
    )


def test_the_single_pass_expression_keeps_the_documented_fallbacks() -> None:
    e = torch.eye(3)
    opposite = torch.stack([torch.stack([e[0], -e[0]])])
    for weights in ([[0.5, 0.5]], [[0.4, 0.6]]):
        w = torch.tensor(weights)
        torch.testing.assert_close(S.sba_single_pass(opposite, w), S.sba(opposite, w))
    zero = S.sba_single_pass(torch.randn(2, 2, 3), torch.zeros(2, 2))
    assert zero.abs().max() == 0
    huge = torch.randn(3, 2, 4) * 1e30, torch.rand(3, 2)
    torch.testing.assert_close(S.sba_single_pass(*huge), S.sba(*huge))


def test_sba_fused_compiles_to_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "_COMPILED", {})
    fused = resolve("sba-fused").fn
    for tokens in (37, 64):  # dynamic token counts: one compile
        outputs, weights = _batch(tokens, 4, 48, tokens)
        outputs, weights = outputs.float(), weights.float()
        combined = fused(outputs, weights)
        torch.testing.assert_close(combined, S.sba(outputs, weights), atol=1e-5, rtol=1e-5)
    assert S._COMPILED["sba"] is not S.sba_single_pass  # compiled, not the eager fallback


@pytest.mark.slow  # compiling the backward graph takes tens of seconds on 2 cores
def test_sba_fused_gradients_through_the_compiled_kernel_equal_sba_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fine-tuning with `sba-fused` back-propagates through the compiled kernel."""
    monkeypatch.setattr(S, "_COMPILED", {})
    outputs, weights = (t.float() for t in _batch(29, 4, 32, 7))
    grads = []
    for fn in (resolve("sba-fused").fn, S.sba):
        leaves = outputs.clone().requires_grad_(), weights.clone().requires_grad_()
        (fn(*leaves) ** 2).sum().backward()
        grads.append([leaf.grad for leaf in leaves])
    assert S._COMPILED["sba"] is not S.sba_single_pass  # the compiled kernel, not the fallback
    for fused, eager in zip(*grads, strict=True):
        torch.testing.assert_close(fused, eager, atol=1e-4, rtol=1e-4)


def test_sba_fused_runs_eagerly_with_a_warning_where_torch_compile_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fn: object, **_: object) -> object:
        def call(*_: object) -> object:
            raise RuntimeError("no C compiler found\nmore detail")

        return call

    monkeypatch.setattr(S, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", broken)
    outputs, weights = _batch(5, 2, 8, 0)
    combined = resolve("sba-fused").fn(outputs, weights)
    torch.testing.assert_close(combined, S.sba(outputs, weights))
    assert "torch.compile failed (no C compiler found); sba-fused runs eagerly" in caplog.text
    assert S._COMPILED["sba"] is S.sba_single_pass


def test_documented_fallbacks() -> None:
    e = torch.eye(3)
    opposite = torch.stack([torch.stack([e[0], -e[0]])])
    # Undefined spherical mean -> direction of the highest-weight expert (first on ties).
    torch.testing.assert_close(S.sba(opposite, torch.tensor([[0.5, 0.5]])), e[0][None])
    torch.testing.assert_close(S.sba(opposite, torch.tensor([[0.4, 0.6]])), -e[0][None] * 1.0)
    # All-zero weights -> zero, as linear.
    assert S.sba(torch.randn(2, 2, 3), torch.zeros(2, 2)).abs().max() == 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_in_and_out(name: str, dtype: torch.dtype) -> None:
    outputs, weights = _batch(16, 2, 32, 5)
    reference = resolve(name).fn(outputs.float(), weights.float())
    combined = resolve(name).fn(outputs.to(dtype), weights.to(dtype))
    assert combined.dtype == dtype
    assert torch.isfinite(combined).all()
    torch.testing.assert_close(combined.float(), reference, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", ALL)
def test_gradients_are_finite(name: str) -> None:
    e = torch.eye(4, dtype=torch.float64)
    outputs = torch.cat(
        [
            torch.randn(5, 2, 4, dtype=torch.float64),
            torch.stack([torch.stack([e[0], -e[0]])]),
            torch.stack([torch.stack([e[1], e[1]])]),
            torch.stack([torch.stack([e[2], torch.zeros(4, dtype=torch.float64)])]),
        ]
    ).requires_grad_()
    weights = torch.rand(8, 2, dtype=torch.float64).requires_grad_()
    resolve(name).fn(outputs, weights).sum().backward()
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()
    assert weights.grad is not None and torch.isfinite(weights.grad).all()


def test_slerp_midpoint_of_orthogonal_units() -> None:
    e = torch.eye(2)
    combined = S.slerp(torch.stack([torch.stack([e[0], e[1]])]), torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(combined, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]))


def test_options_are_validated() -> None:
    assert resolve("sba-karcher", {"iters": 3}).options["iters"] == 3
    with pytest.raises(AggregatorError, match="eps"):
        resolve("sba", {"eps": -1})
    with pytest.raises(AggregatorError, match="unknown aggregator"):
        resolve("nope")
    with pytest.raises(AggregatorError, match="bad options"):
        resolve("linear", {"eps": 1e-3})


def test_user_operator_by_import_path() -> None:
    op = resolve("tests.user_ops:scaled_linear", {"scale": 2.0})
    outputs, weights = _batch(3, 2, 4, 0)
    torch.testing.assert_close(op.fn(outputs, weights), 2.0 * S.linear(outputs, weights))
    with pytest.raises(AggregatorError, match="returned"):
        resolve("tests.user_ops:wrong_shape")
    with pytest.raises(AggregatorError, match="non-finite"):
        resolve("tests.user_ops:nan_out")
    with pytest.raises(AggregatorError, match="cannot import"):
        resolve("no_such_module_xyz:fn")
