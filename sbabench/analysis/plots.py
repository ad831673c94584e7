"""PNG figures: score differences with CIs (forest plot) and per-layer geometry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sbabench.analysis.compare import Comparison, compare_results
from sbabench.analysis.names import check_result_names
from sbabench.errors import SbabenchError
from sbabench.paths import confined
from sbabench.run.results import UnitResult


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, dpi: int = 110) -> Path:
    path = confined(path.parent, path.name)  # the name holds names read from result files
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def forest_plot(comparison: Comparison, path: Path) -> Path | None:
    """Difference to the baseline with its 95% CI, one row per tested model/aggregator/task;
    with replicates, each replicate's difference as a cross beside it."""
    rows = [r for r in comparison.rows if r.item_delta is not None and r.ci_low is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    colors = {"better": "tab:green", "worse": "tab:red"}
    for y, row in enumerate(rows):
        color = colors.get(row.mark.value, "tab:gray")
        ax.plot([row.ci_low, row.ci_high], [y, y], color=color, linewidth=2)
        ax.plot([row.item_delta], [y], "o", color=color)
        if row.replicate_deltas:  # each replicate's difference, just below its row's CI
            dots = len(row.replicate_deltas)
            ax.plot(row.replicate_deltas, [y + 0.25] * dots, "x", color=color, markersize=5)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(
        range(len(rows)),
        [f"{r.task}\n{r.model}/{r.aggregator} vs {r.baseline}" for r in rows],
        fontsize=8,
    )
    ax.invert_yaxis()
    replicated = any(r.replicate_deltas for r in rows)
    ax.set_xlabel(
        "difference to baseline (per-item statistic), 95% CI"
        + ("; x: each replicate's difference" if replicated else "")
    )
    ax.set_title("green: significantly better, red: worse, grey: not significant (Holm)")
    return _save(fig, path, dpi=120)


def _histograms(axes: Any, layers: dict[str, Any]) -> None:
    """Top row: norms of the selected experts; bottom row: angles between them; a layer a column."""
    for col, name in enumerate(layers):
        hist = layers[name]["histograms"]
        for row, key, label in (
            (0, "norm", "||y_i|| of selected experts"),
            (1, "pairwise_angle_deg", "angle between selected experts (°)"),
        ):
            edges, counts = hist[key]["edges"], hist[key]["counts"]
            if edges:
                axes[row][col].stairs(counts, edges, fill=True, alpha=0.7)
            axes[row][col].set_xlabel(label, fontsize=8)
            axes[row][col].set_title(name.replace(".combine", ""), fontsize=8)


def _per_layer_bars(top: Any, bottom: Any, layers: dict[str, Any], operator: str) -> None:
    """Collapse ratio (linear vs the operator) and within-token norm CV, per layer."""
    names = list(layers)
    short = [n.replace(".combine", "").split(".")[-3] if n.count(".") >= 3 else n for n in names]
    x = list(range(len(names)))
    linear = [layers[n]["linear_collapse_ratio"]["mean"] for n in names]
    own = [layers[n]["collapse_ratio"]["mean"] for n in names]
    top.bar([i - 0.2 for i in x], linear, width=0.4, label="linear")
    top.bar([i + 0.2 for i in x], own, width=0.4, label=operator)
    top.axhline(1.0, color="black", linewidth=0.8)
    top.set_xticks(x, short)
    top.set_title("collapse ratio per layer (1 = on the experts' sphere)", fontsize=8)
    top.legend(fontsize=8, loc="lower right")
    bottom.bar(x, [layers[n]["norm_cv_within_token"]["mean"] for n in names])
    bottom.set_xticks(x, short)
    bottom.set_title("norm CV of a token's selected experts", fontsize=8)


def _by_system(
    results: Sequence[UnitResult], part: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(model, aggregator) -> layer -> its geometry (or only `part` of it, where present). Two
    systems whose `model__aggregator` file names coincide (names may hold `_`) are a user error,
    not one figure drawn over the other."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for r in results:
        for name, layer in r.geometry_layers.items():
            value = layer if part is None else layer.get(part)
            if value:
                found.setdefault((r.model, r.aggregator), {})[name] = value
    files: dict[str, tuple[str, str]] = {}
    for system in found:
        other = files.setdefault(_file_name(system), system)
        if other != system:
            raise SbabenchError(
                f"{'/'.join(other)} and {'/'.join(system)} would share the figure "
                f"{_file_name(system)}",
                fix="rename a model or an operator label so that model__operator differs",
            )
    return found


def _file_name(system: tuple[str, str]) -> str:
    return f"{system[0]}__{system[1]}"


def _expert_load(axes: Any, layers: dict[str, Any]) -> None:
    """Third row: each expert's share of the routed (token, slot) pairs (over every real token
    seen, else the geometry sample), a layer a column; the dashed line is a balanced router."""
    for col, name in enumerate(layers):
        counts = (layers[name].get("load") or {}).get("tokens_per_expert") or []
        total = sum(counts)
        load = [c / total for c in counts] if total else []
        load = load or layers[name].get("routing", {}).get("load") or []
        ax = axes[2][col]
        ax.bar(range(len(load)), load)
        if load:
            ax.axhline(1 / len(load), color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_title(f"load per expert, {name.replace('.combine', '')}", fontsize=8)
    axes[2][-1].axis("off")


def geometry_plots(results: Sequence[UnitResult], folder: Path) -> list[Path]:
    """Per model/aggregator: norm and angle histograms, and each expert's load, per layer;
    collapse ratio per layer."""
    plt = _pyplot()
    written = []
    for system, layers in _by_system(results).items():
        columns = len(layers) + 1
        fig, axes = plt.subplots(3, columns, figsize=(4 * columns, 9.5), squeeze=False)
        _histograms(axes, layers)
        _per_layer_bars(axes[0][-1], axes[1][-1], layers, system[1])
        _expert_load(axes, layers)
        fig.suptitle(" / ".join(system))
        written.append(_save(fig, folder / f"geometry_{_file_name(system)}.png"))
    return written


_PROBE_PANELS = (
    ("jacobian", "alignment_matrix", "Jacobian alignment |<J_i,J_j>| (1 = same map)", (0.0, 1.0)),
    ("expert-pca", "grassmann_matrix", "Grassmann distance of top-m subspaces (1 = orthogonal)", (0.0, 1.0)),
    ("router-coupling", "matrix", "cos(router row i, mean input of expert j)", (-1.0, 1.0)),
)  # fmt: skip


def _heatmap(fig: Any, ax: Any, probes: dict[str, Any], panel: tuple[Any, ...], title: str) -> None:
    """One expert x expert matrix of a probe, or why it is missing."""
    import numpy as np

    probe, key, label, (lo, hi) = panel
    values = (probes.get(probe) or {}).get(key)
    if values is None:
        reason = (probes.get(probe) or {}).get("unavailable", "not requested")
        ax.text(0.5, 0.5, f"{probe}: {reason}", ha="center", va="center", fontsize=7, wrap=True)
        ax.axis("off")
        return
    matrix = np.array([[np.nan if v is None else v for v in r] for r in values])
    image = ax.imshow(matrix, vmin=lo, vmax=hi, cmap="viridis")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xlabel("expert", fontsize=8)
    ax.set_ylabel("expert", fontsize=8)
    ax.set_title(
        f"{title}\n{label}{_coupling_line(probes) if probe == 'router-coupling' else ''}",
        fontsize=7,
    )


def _coupling_line(probes: dict[str, Any]) -> str:
    """The router-coupling probe's scalars, for its panel's title."""
    coupling = probes.get("router-coupling") or {}
    pooled, within, similarity = (
        "n/a" if coupling.get(k) is None else f"{coupling[k]:.3f}"
        for k in (
            "score_activation_spearman",
            "score_activation_spearman_within",
            "router_row_abs_cosine_mean",
        )
    )
    return f"\nscore~activation rho {pooled} (within expert {within}), row |cos| {similarity}"


def _spectrum(ax: Any, probes: dict[str, Any], title: str) -> None:
    """The selected experts' mean normalised Jacobian spectrum."""
    spectrum = (probes.get("jacobian") or {}).get("normalised_spectrum")
    if not spectrum:
        ax.axis("off")
        return
    ax.plot(range(1, len(spectrum) + 1), spectrum, marker="o", markersize=3)
    ax.set_xlabel("singular value index", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{title}\nselected experts' Jacobian spectrum (s_i / s_1)", fontsize=7)


def probe_plots(results: Sequence[UnitResult], folder: Path) -> list[Path]:
    """Per model/aggregator with probes: expert x expert heatmaps and Jacobian spectra per layer."""
    by_system = _by_system(results, "probes")
    written: list[Path] = []
    if not by_system:
        return written
    plt = _pyplot()
    for system, layers in by_system.items():
        fig, axes = plt.subplots(len(layers), 4, figsize=(16, 3.6 * len(layers)), squeeze=False)
        for row, (name, probes) in enumerate(layers.items()):
            title = name.replace(".combine", "")
            for col, panel in enumerate(_PROBE_PANELS):
                _heatmap(fig, axes[row][col], probes, panel, title)
            _spectrum(axes[row][3], probes, title)
        fig.suptitle(" / ".join(system) + ": geometry probes")
        written.append(_save(fig, folder / f"probes_{_file_name(system)}.png"))
    return written


def training_plots(results: Sequence[UnitResult], folder: Path) -> list[Path]:
    """Per model: the training loss and gradient-norm curves of each operator."""
    curves: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r.training and r.training.loss:
            curves.setdefault(r.model, {})[r.aggregator] = r.training.model_dump()
    written: list[Path] = []
    if not curves:
        return written
    plt = _pyplot()
    for model, by_operator in curves.items():
        balanced = any(log.get("load_balancing_loss") for log in by_operator.values())
        fig, axes = plt.subplots(1, 3 if balanced else 2, figsize=(16 if balanced else 11, 4))
        loss_ax, norm_ax = axes[0], axes[1]
        for operator, log in by_operator.items():
            loss_ax.plot(log["loss"], label=operator)
            norm_ax.plot(log["grad_norm"], label=operator)
            if balanced:
                axes[2].plot(log.get("load_balancing_loss") or [], label=operator)
        loss_ax.set_title("training loss (same steps, batch, seed, data order)", fontsize=9)
        norm_ax.set_title("gradient norm before clipping at 1.0", fontsize=9)
        if balanced:
            axes[2].set_title(
                "load-balancing loss (1 = balanced; aux_loss x this is added)", fontsize=9
            )
        for ax in axes:
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
        fig.suptitle(model)
        written.append(_save(fig, folder / f"training_{model}.png"))
    return written


def _tradeoff_series(results: Sequence[UnitResult]) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """task -> series -> (FLOPs share, encode s, score, tilt rate) points. A series is one model
    build with one operator, whatever its token elimination (unpruned rows are share 1)."""
    from sbabench.digests import key_digest

    series: dict[str, dict[tuple[str, str], list[tuple[Any, ...]]]] = {}
    names: dict[str, str] = {}
    for r in results:
        spec = {k: v for k, v in r.key_parts.model.spec.items() if k != "token_elimination"}
        build = key_digest({"spec": spec, "weights": r.key_parts.model.weights})
        record = r.token_elimination
        if record is not None and record.flops_fraction is None:
            continue  # every text came from the cache: no FLOPs share to draw
        if record is None or record.tilt_rate == 0:
            names[build] = r.model
        share = 1.0 if record is None or record.flops_fraction is None else record.flops_fraction
        tilt = 0.0 if record is None else record.tilt_rate
        point = (share, r.timing_s.encode, r.main_score, tilt)
        series.setdefault(r.task, {}).setdefault((build, r.aggregator), []).append(point)
    return {
        task: {
            f"{names.get(build, 'pruned')}/{aggregator}": sorted(points)
            for (build, aggregator), points in by_series.items()
        }
        for task, by_series in series.items()
    }


def token_elimination_plot(results: Sequence[UnitResult], folder: Path) -> list[Path]:
    """Per task: main score against the share of encoder FLOPs kept and against the measured
    encode time, one line per model build and operator, each point labelled with its Tilt-Rate."""
    if not any(r.token_elimination is not None for r in results):
        return []
    by_task = _tradeoff_series(results)
    plt = _pyplot()
    fig, axes = plt.subplots(len(by_task), 2, figsize=(11, 3.8 * len(by_task)), squeeze=False)
    for row, (task, by_series) in enumerate(sorted(by_task.items())):
        for label, points in sorted(by_series.items()):
            for col, x in ((0, 0), (1, 1)):
                xs = [p[x] for p in points]
                line = axes[row][col].plot(xs, [p[2] for p in points], marker="o", label=label)
                for p in points:
                    axes[row][col].annotate(
                        f"R={p[3]:g}", (p[x], p[2]), fontsize=6, color=line[0].get_color()
                    )
        axes[row][0].set_xlabel("share of encoder FLOPs kept (analytic)", fontsize=8)
        axes[row][1].set_xlabel("encode time of the unit's texts (s, measured)", fontsize=8)
        for ax in axes[row]:
            ax.set_ylabel(f"{task} main score", fontsize=8)
            ax.legend(fontsize=7)
    fig.suptitle("token elimination: quality against cost (R = Tilt-Rate)")
    return [_save(fig, folder / "token_elimination.png")]


def write_figures(
    results: Sequence[UnitResult],
    folder: Path,
    baseline: str = "linear",
    n_resamples: int = 1000,
    sources: Sequence[Path] = (),
) -> list[Path]:
    """Every figure the results support, written under `folder`: the forest plot against
    `baseline` first (when anything is paired), then geometry, probes, training curves and
    token elimination. Returns the files written ([] when there is nothing to plot).

    Names in file names come from the results: one that is no safe name is a user error
    (naming its file when found under `sources`, the folders the results were read from)."""
    check_result_names(results, sources)
    folder.mkdir(parents=True, exist_ok=True)
    written = (
        geometry_plots(results, folder)
        + probe_plots(results, folder)
        + training_plots(results, folder)
        + token_elimination_plot(results, folder)
    )
    comparison = compare_results(results, baseline=baseline, n_resamples=n_resamples)
    forest = forest_plot(comparison, folder / "forest.png")
    return [forest, *written] if forest else written
