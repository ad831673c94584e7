"""Unit keys: every part that changes a number is in, nothing else is; planning stays light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sbabench.aggregators import resolve
from sbabench.run.keys import KeyParts, linear_operator_key, unit_key_parts
from sbabench.suite import expand, parse_suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = """\
name: keys
models:
  - {name: moe, source: upcycle, experts: 4, layers: [1], router: random}
  - {name: dense, source: dense}
aggregators: [linear, sba, {name: sba, eps: 1.0e-4, label: sba-eps}]
tasks: [LeeDocSTS, WordSim353]
settings: {device: cpu, batch_size: 8}
"""


def _parts(text: str = SUITE) -> dict[str, KeyParts]:
    suite = parse_suite(text, check=False)
    out = {}
    for unit in expand(suite):
        entry = unit.aggregator
        operator = None if entry is None else resolve(entry.name, entry.options)
        out[unit.label] = unit_key_parts(suite, unit, operator)
    return out


def test_each_part_that_changes_a_number_changes_the_key() -> None:
    parts = _parts()
    keys = {label: p.digest for label, p in parts.items()}
    assert len(set(keys.values())) == len(keys)  # every unit its own key
    sba, eps = parts["moe/sba/LeeDocSTS"], parts["moe/sba-eps/LeeDocSTS"]
    assert sba.aggregator is not None and eps.aggregator is not None
    assert sba.aggregator.options == {"eps": 1e-6} and eps.aggregator.options == {"eps": 1e-4}
    assert sba.aggregator.code_sha256 == eps.aggregator.code_sha256  # same code, other options
    assert sba.model == parts["moe/linear/LeeDocSTS"].model
    assert parts["dense/dense/LeeDocSTS"].aggregator is None
    changed = _parts(SUITE.replace("settings: {", "settings: {dtype: bfloat16, "))
    assert changed["moe/sba/LeeDocSTS"].settings.dtype == "bfloat16"
    assert changed["moe/sba/LeeDocSTS"].digest != sba.digest
    reseeded = _parts(SUITE.replace("router: random}", "router: random, seed: 3}"))
    assert reseeded["moe/sba/LeeDocSTS"].model.spec["seed"] == 3
    assert reseeded["moe/sba/LeeDocSTS"].digest != sba.digest


def test_what_changes_no_number_is_not_in_the_key() -> None:
    parts = _parts()
    renamed = _parts(SUITE.replace("name: moe,", "name: other,").replace("name: keys", "name: k2"))
    assert renamed["other/sba/LeeDocSTS"].digest == parts["moe/sba/LeeDocSTS"].digest
    rebatched = _parts(SUITE.replace("batch_size: 8", "batch_size: 64"))
    assert rebatched["moe/sba/LeeDocSTS"].digest == parts["moe/sba/LeeDocSTS"].digest


def test_embedding_space_is_shared_by_the_tasks_of_a_model_and_operator() -> None:
    parts = _parts()
    sts, words = parts["moe/sba/LeeDocSTS"], parts["moe/sba/WordSim353"]
    assert sts.embedding_space() == words.embedding_space()
    assert sts.embedding_space() != parts["moe/linear/LeeDocSTS"].embedding_space()
    assert sts.with_operator(linear_operator_key()).embedding_space() == (
        parts["moe/linear/WordSim353"].embedding_space()
    )


def test_planning_a_suite_imports_no_model_library(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from sbabench.run.plan import plan_suite\n"
        "from sbabench.suite import load_suite\n"
        "plan = plan_suite(load_suite('suites/quickstart.yaml'), sys.argv[1])\n"
        "heavy = ('torch', 'mteb', 'transformers', 'sentence_transformers', 'sklearn')\n"
        "print(json.dumps([len(plan.todo), [m for m in heavy if m in sys.modules]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr
    todo, heavy = json.loads(out.stdout)
    assert todo == 9 and heavy == []


def test_options_older_results_implicitly_had_stay_out_of_the_model_key() -> None:
    kmeans = SUITE.replace("router: random}", "router: kmeans}")
    default = _parts(kmeans)["moe/sba/LeeDocSTS"].model.spec
    assert (default["router_tokens"], default["router_inits"]) == (4096, 1)
    assert "router_decay" not in default and "token_elimination" not in default
    # the router build older results had (8192 tokens, 3 inits) is their key, not a new one
    legacy = _parts(kmeans.replace("router: kmeans}", "router_tokens: 8192, router_inits: 3}"))
    spec = legacy["moe/sba/LeeDocSTS"].model.spec
    assert "router_tokens" not in spec and "router_inits" not in spec
    # a random router has no centroids: how they would be fitted is not part of it
    assert "router_tokens" not in _parts()["moe/sba/LeeDocSTS"].model.spec


_MODEL_CODE = (
    "import json, sys\n"
    "from sbabench.run.keys import model_key\n"
    "from sbabench.suite import expand, parse_suite\n"
    "units = expand(parse_suite(sys.stdin.read(), check=False))\n"
    "print(json.dumps({u.model.name: model_key(u).code_sha256 for u in units}))\n"
)
FAMILIES = SUITE.replace(
    "  - {name: dense, source: dense}\n",
    "  - {name: dense, source: dense}\n  - {name: hub, source: huggingface, path: org/tiny-moe}\n",
)


def _in_copy(package_root: Path, script: str, stdin: str) -> Any:
    """What `script` prints as JSON, run on the sbabench copy at `package_root`."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=stdin,
        cwd=package_root,
        env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _copy_of_sbabench(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "sbabench", tmp_path / "sbabench", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path / "sbabench"


def _model_code(package_root: Path) -> dict[str, str]:
    digests: dict[str, str] = _in_copy(package_root, _MODEL_CODE, FAMILIES)
    return digests


@pytest.mark.parametrize("module", ["transformers_experts.py", "nomic.py"])
def test_editing_an_moe_family_module_rekeys_moe_models_not_dense_ones(
    tmp_path: Path, module: str
) -> None:
    family = _copy_of_sbabench(tmp_path) / "moe" / module
    before = _model_code(tmp_path)
    assert set(before) == {"moe", "dense", "hub"}
    text = family.read_text()
    family.write_text(text + "\n# a comment changes no number\n")
    assert _model_code(tmp_path) == before
    # registered only by `moe/__init__.py` importing it: no call reaches it by name
    family.write_text(text.replace("import torch\n", "import torch\n\n_UNUSED = 1\n", 1))
    after = _model_code(tmp_path)
    assert after["moe"] != before["moe"] and after["hub"] != before["hub"]
    assert after["dense"] == before["dense"]


def test_a_half_precision_embedding_cache_is_in_the_key_and_full_precision_is_not() -> None:
    from sbabench.aggregators import resolve
    from sbabench.run.keys import unit_key_parts
    from sbabench.suite import expand, parse_suite
    from tests.factories import TINY_SUITE

    keys = {}
    for cache in ("float32", "off", "float16"):
        suite = parse_suite(
            TINY_SUITE.replace("{device: cpu}", f"{{device: cpu, embedding_cache: '{cache}'}}"),
            check=False,
        )
        keys[cache] = unit_key_parts(suite, expand(suite)[0], resolve("linear"))
    assert (
        keys["float32"] == keys["off"]
        and "embedding_cache" not in keys["off"].model_dump()["settings"]
    )
    assert keys["float16"].digest != keys["float32"].digest


def test_the_loss_free_options_are_in_the_train_and_checkpoint_keys() -> None:
    train = "train: {steps: 2, router: loss-free, bias_rate: 0.001}\n"
    slow = _parts(SUITE + train)["moe/sba/LeeDocSTS"]
    fast = _parts(SUITE + train.replace("0.001", "0.002"))["moe/sba/LeeDocSTS"]
    learned = _parts(SUITE + train.replace("loss-free, bias_rate: 0.001", "learned"))
    assert slow.train is not None and slow.train.spec["bias_rate"] == 0.001
    assert fast.digest != slow.digest and fast.checkpoint_key() != slow.checkpoint_key()
    assert learned["moe/sba/LeeDocSTS"].checkpoint_key() != slow.checkpoint_key()


def test_routing_sparsity_is_in_the_model_key_and_no_override_is_not() -> None:
    plain = _parts()["moe/sba/LeeDocSTS"]
    assert "routing" not in plain.model.spec
    keys = {plain.digest}
    for top_k in ("2", "1", "all"):
        routed = SUITE.replace("router: random}", f"router: random, routing: {{top_k: {top_k}}}}}")
        parts = _parts(routed)["moe/sba/LeeDocSTS"]
        assert parts.model.spec["routing"] == {"top_k": top_k if top_k == "all" else int(top_k)}
        keys.add(parts.digest)
    assert len(keys) == 4  # even the model's own k is keyed: too broad is safe


def test_a_bundled_tasks_key_covers_the_code_that_builds_it() -> None:
    """What a bundled task holds is built by sbabench's code from a package's files: that code
    (and what it imports) is in the task's key, not only the package's version."""
    from sbabench.digests import code_modules
    from sbabench.tasks import bundled_code_sha256, task_identity
    from sbabench.tasks.spec import TaskEntry

    identity = task_identity(TaskEntry(name="AIABDEReranking"))
    assert identity["code_sha256"] == bundled_code_sha256()
    covered = code_modules(("sbabench.tasks.bundled",))
    assert {"sbabench.tasks.sources", "sbabench.tasks.bundled"} <= set(covered)
    assert task_identity(TaskEntry(name="LeeDocSTS"))["code_sha256"] == identity["code_sha256"]


def test_a_result_from_before_the_task_code_digest_keeps_its_key_when_saved_again(
    tmp_path: Path,
) -> None:
    """Results written before task keys had a code digest (the committed baselines) stay valid
    when a tool loads, changes and saves them: an absent digest is not written as null."""
    from sbabench.run.results import load_result, save_result

    baseline = Path(__file__).resolve().parents[2] / "results" / "baseline" / "quickstart"
    source = baseline / "minilm" / "dense" / "LeeDocSTS.json"
    assert "code_sha256" not in json.loads(source.read_text())["key_parts"]["task"]
    result = load_result(source)
    assert result is not None
    save_result(tmp_path / "again.json", result.model_copy(update={"main_score": 0.1}))
    again = load_result(tmp_path / "again.json")
    assert again is not None and again.key == result.key and again.main_score == 0.1


_SCORED = """
import json, sys
from sbabench.aggregators import resolve
from sbabench.run.keys import unit_key_parts
from sbabench.suite import expand, parse_suite
suite = parse_suite(sys.stdin.read(), check=False)
out = {}
for unit in expand(suite):
    entry = unit.aggregator
    parts = unit_key_parts(suite, unit, None if entry is None else resolve(entry.name))
    out[unit.label] = [parts.digest, parts.embedding_space()]
print(json.dumps(out))
"""


def _scored(package_root: Path) -> dict[str, list[str]]:
    """Each unit's key and embedding space, computed from the sbabench copy at `package_root`."""
    keys: dict[str, list[str]] = _in_copy(package_root, _SCORED, SUITE)
    return keys


@pytest.mark.parametrize(
    "module",
    [
        "tasks/classification.py",  # registered by name ("module:function"): no import shows it
        "run/encoding.py",
        "geometry/probes/jacobian.py",
    ],
)
def test_editing_scoring_code_rekeys_every_unit_but_keeps_its_embeddings(
    tmp_path: Path, module: str
) -> None:
    path = _copy_of_sbabench(tmp_path) / module
    before = _scored(tmp_path)
    text = path.read_text()
    path.write_text(text + "\n# a comment changes no number\n")
    assert _scored(tmp_path) == before
    path.write_text(text + "\n_UNUSED = 1\n")
    after = _scored(tmp_path)
    assert set(after) == set(before)
    for label, (key, space) in after.items():
        assert key != before[label][0] and space == before[label][1], label


def test_the_scoring_digest_takes_no_code_that_has_its_own_key_part() -> None:
    """An operator's, a model's or the train stage's code re-keys only their own units."""
    from sbabench.run.keys import scoring_code_modules

    modules = set(scoring_code_modules())
    assert {
        "sbabench.run.score",
        "sbabench.tasks.classification",
        "sbabench.geometry.stats",
    } <= modules
    elsewhere = ("sbabench.aggregators", "sbabench.models", "sbabench.moe", "sbabench.run.training")
    assert not [m for m in modules if m.startswith(elsewhere)]
    assert "sbabench.tasks.item_statistics" not in modules  # compare's, not a unit's


def test_the_train_key_covers_the_session_that_sets_up_training() -> None:
    from sbabench.digests import code_modules
    from sbabench.run.keys import _TRAINING_CODE

    assert {"sbabench.run.session", "sbabench.run.training"} <= set(code_modules(_TRAINING_CODE))
