"""Each extension point is one registry: a new task type, probe or MoE family registered in a
test works everywhere its kind is used, with nothing else edited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from sbabench.analysis.stats import paired_bootstrap, statistic
from sbabench.geometry.probes import ProbeInfo, run_probes
from sbabench.geometry.probes.registry import unregister as unregister_probe
from sbabench.geometry.recorder import GeometryRecorder
from sbabench.geometry.spec import GeometrySpec
from sbabench.moe import attach_moe, observing, set_aggregator
from sbabench.moe.base import AggregationPoint, MoELayer
from sbabench.moe.registry import MoEFamily
from sbabench.moe.registry import register as register_family
from sbabench.moe.registry import unregister as unregister_family
from sbabench.tasks.items import ItemScores, collect
from sbabench.tasks.spec import TaskEntry
from sbabench.tasks.types import TaskType, find
from sbabench.tasks.types import register as register_type
from sbabench.tasks.types import unregister as unregister_type

# --- a task type ------------------------------------------------------------------------------


def mean_abs_error(gold: np.ndarray, predicted: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The toy type's statistic: minus the mean absolute error of each resample (`weights`:
    how often it drew each item)."""
    return -(weights * np.abs(gold - predicted)).sum(1) / weights.sum(1)


def collect_toy(task: Any, data: Any, embedder: Any, seed: int) -> ItemScores:
    """The toy type's collector: the first embedding coordinate of each text vs its score."""
    vectors = embedder.embed(list(data["text"]))
    return ItemScores(kind="toy", gold=list(data["score"]), predicted=vectors[:, 0].tolist())


@pytest.fixture
def toy_type() -> Iterator[TaskType]:
    registered = register_type(
        TaskType(
            name="toy-regression",
            aliases=("ToyRegression",),
            mteb_types=("ToyRegressionTask",),
            columns=("text", "score"),
            item_kind="toy",
            collector=f"{__name__}:collect_toy",
            statistic=f"{__name__}:mean_abs_error",
            resampled="texts",
            label="Toy",
            statistic_label="-MAE",
        )
    )
    yield registered
    unregister_type("toy-regression")


def test_a_registered_task_type_is_used_everywhere(toy_type: TaskType, tmp_path: Any) -> None:
    assert find("toyregression") is toy_type  # aliases are case-insensitive
    entry = TaskEntry(name="mine", type="ToyRegression", path="x.csv", text="t", score="s")
    assert entry.type == "toy-regression" and entry.columns() == {"text": "t", "score": "s"}
    with pytest.raises(ValidationError, match="does not use text1"):
        TaskEntry(name="mine", type="toy-regression", path="x.csv", text="t", score="s", text1="a")

    class Embedder:
        def embed(self, texts: list[str], prompt_type: Any = None) -> np.ndarray:
            return np.array([[len(t), 1.0] for t in texts])

        def has(self, text: str, prompt_type: Any) -> bool:
            return True

    class Task:
        class metadata:
            type = "ToyRegressionTask"

        dataset: ClassVar = {"test": {"text": ["a", "bbb"], "score": [1.0, 3.0]}}

    items = collect(Task(), Embedder(), "test", ["default"], seed=0)
    assert items["default"].kind == "toy" and items["default"].predicted == [1.0, 3.0]
    gold = np.array([1.0, 2.0])
    assert statistic("toy", gold, gold + 1)[0] == -1.0
    better = ItemScores(kind="toy", gold=[1.0, 3.0] * 20, predicted=[1.5, 3.5] * 20)
    worse = ItemScores(kind="toy", gold=[1.0, 3.0] * 20, predicted=[2.0, 5.0] * 20)
    test = paired_bootstrap({"d": worse}, {"d": better}, n_resamples=50)
    assert test.delta == pytest.approx(-1.0)


# --- a geometry probe -------------------------------------------------------------------------


class MeanNormSettings(BaseModel):
    """Settings of the toy probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    norm_order: int = 2


def mean_norm(context: Any) -> dict[str, Any]:
    """The toy probe: the mean norm of the layer inputs."""
    order = context.settings.norm_order
    return {"mean_norm": float(context.inputs.norm(p=order, dim=-1).mean()), "order": order}


@pytest.fixture
def toy_probe() -> Iterator[None]:
    from sbabench.geometry.probes.registry import register

    register(ProbeInfo("mean-norm", "mean input norm", MeanNormSettings, mean_norm))
    yield
    unregister_probe("mean-norm")


def test_a_registered_probe_validates_and_runs(toy_probe: None) -> None:
    spec = GeometrySpec(tokens=64, probes=("mean-norm",), norm_order=1)
    assert spec.settings("mean-norm") == MeanNormSettings(norm_order=1)
    assert spec.recorded()["norm_order"] == 1
    with pytest.raises(ValidationError, match="unknown key"):
        GeometrySpec(probes=("mean-norm",), norm_ordre=1)
    with pytest.raises(ValidationError, match="norm_order"):
        GeometrySpec(probes=("mean-norm",), norm_order="one")

    model = ToyModel()
    layers = attach_toy(model)  # the probe needs aggregation points, not a registered family
    recorder = GeometryRecorder(64, keep_inputs=True)
    with observing(model, recorder.observe):
        model(torch.randn(3, 5, 8))
    probed = run_probes(spec.requested(), recorder, model, layers)
    result = probed["moe.combine"]["mean-norm"]
    assert result["order"] == 1 and result["mean_norm"] > 0


# --- an MoE family ----------------------------------------------------------------------------


class ToyMoE(nn.Module):
    """Two linear experts, a softmax router over both: a family no built-in adapter knows."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.router = nn.Linear(8, 2, bias=False)
        self.combine: AggregationPoint | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, 8)
        weights = torch.softmax(self.router(flat), dim=-1)
        outputs = torch.stack([e(flat) for e in self.experts], dim=1)
        if self.combine is None:
            combined = (outputs * weights.unsqueeze(-1)).sum(1)
        else:
            index = torch.arange(2).expand(len(flat), 2)
            combined = self.combine(outputs, weights, index, flat)
        return combined.reshape(x.shape)


class ToyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.moe = ToyMoE()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.moe(x)


def attach_toy(model: nn.Module) -> list[MoELayer]:
    """The toy family's adapter: give each ToyMoE an aggregation point."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, ToyMoE):
            if module.combine is None:
                module.combine = AggregationPoint(2, 2, True)
            found.append(MoELayer(f"{name}.combine", "toy", 2, 2, True, name, "toy"))
    return found


@pytest.fixture
def toy_family() -> Iterator[None]:
    register_family(MoEFamily("toy", "a toy MoE", attach_toy))
    yield
    unregister_family("toy")


def test_a_registered_family_is_found_and_patched(toy_family: None) -> None:
    from sbabench.aggregators import resolve

    model = ToyModel()
    x = torch.randn(2, 3, 8)
    before = model(x)
    layers = attach_moe(model)
    assert [(layer.name, layer.adapter) for layer in layers] == [("moe.combine", "toy")]
    torch.testing.assert_close(model(x), before)  # linear is the model's own sum
    set_aggregator(model, resolve("sba").fn)
    assert not torch.allclose(model(x), before)


def test_without_its_registration_the_family_is_not_found() -> None:
    from sbabench.errors import ModelSpecError

    with pytest.raises(ModelSpecError, match="found no MoE layer"):
        attach_moe(ToyModel())
