"""One model for the units of a model: built on first use, switched between operators, and
fine-tuned per operator when the suite has a `train:` block.

With a training stage every operator starts from the same initial weights (restored before
each), then loads its cached checkpoint or trains and caches one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbabench.run.results import TrainingRecord

if TYPE_CHECKING:
    from sbabench.models.encoder import TextEncoder
    from sbabench.run.plan import PlannedUnit
    from sbabench.suite import Suite, TrainSpec, Unit


class ModelSession:
    """The model of one suite model, shared by its operators' units."""

    def __init__(self, suite: Suite, unit: Unit, cache: Path) -> None:
        self.suite, self.unit = suite, unit
        self.encoder: TextEncoder | None = None
        self.load_s = 0.0
        self.cache = cache
        self._initial: dict[str, Any] | None = None
        self.training: dict[str, TrainingRecord] = {}
        """Training log per checkpoint key."""

    @property
    def spec(self) -> TrainSpec | None:
        """This model's train stage (the suite's, with the model's own router options)."""
        return self.unit.train

    @property
    def checkpoints(self) -> Path:
        """Where trained parameters are cached."""
        return self.cache / "checkpoints"

    def _build(self) -> TextEncoder:
        from sbabench.models.encoder import build_encoder
        from sbabench.models.machine_cache import MachineCache

        if self.encoder is None:
            start = time.perf_counter()
            self.encoder = build_encoder(
                self.unit.model,
                self.suite.settings.device,
                self.suite.settings.dtype,
                cache=MachineCache(),
            )
            self.load_s = time.perf_counter() - start
        return self.encoder

    def with_aggregator(self, planned: PlannedUnit) -> Callable[[], TextEncoder]:
        """A builder of the encoder set up for `planned`'s operator (and trained for it)."""

        def get() -> TextEncoder:
            from sbabench.moe import set_aggregator

            encoder = self._build()
            if planned.aggregator is not None:
                set_aggregator(encoder.model, planned.aggregator.fn, planned.aggregator.name)
            if self.spec is not None:
                self._train(planned, encoder)
            return encoder

        return get

    def _train(self, planned: PlannedUnit, encoder: TextEncoder) -> None:
        from sbabench.run import training

        spec = self.spec
        assert spec is not None
        if self._initial is None:
            training.prepare_routers(encoder, spec)  # before the snapshot: it may swap modules
            self._initial = {k: v.detach().clone() for k, v in encoder.model.state_dict().items()}
        else:
            encoder.model.load_state_dict(self._initial)
        key = planned.key_parts.checkpoint_key()
        if not encoder.moe_layers and spec.trainable == "moe":
            self.training[key] = TrainingRecord(
                skipped="dense model: `trainable: moe` trains nothing"
            )
            return
        record = training.load_checkpoint(self.checkpoints, key, encoder)
        if record is None:
            record = training.train(encoder, spec)
            training.save_checkpoint(self.checkpoints, key, encoder, spec, record)
        self.training[key] = record

    def training_log(self, planned: PlannedUnit) -> TrainingRecord | None:
        """The log of this unit's model x operator: from this run or the checkpoint cache."""
        if self.spec is None:
            return None
        from sbabench.run import training

        key = planned.key_parts.checkpoint_key()
        return self.training.get(key) or training.load_log(self.checkpoints, key)
