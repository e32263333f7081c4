"""Pictures of a test's state: posterior densities per variant, P(best) over the windows so
far, and the anytime-valid p-value's path with the level a winner must reach. Rendered to PNG
bytes (no display needed)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable

import numpy as np
from scipy import stats as distributions


def _pyplot():
    """matplotlib, imported on first use: it costs 1.5 s, and every run process (ingestion
    runs too) imports this module through the Definitions."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


POSTERIOR_ROW_IN = 3.2  # a test's row in the posterior picture, inches
TITLE_IN, DATES_IN = 0.3, 0.75  # room above a row for its titles, below for rotated dates


def posterior_figure(
    latest: list[dict[str, object]],
    history: list[dict[str, object]],
    dpi: int = 80,
    levels: dict[str, float] | None = None,
) -> bytes:
    """One row per test: the Beta posterior of each variant (left), each variant's P(best)
    window by window (middle), and each variant's anytime-valid p-value against the control,
    running minimum over the windows, with the level a winner must reach (right; α / (K − 1)
    from `levels` by test, 0.05 when absent). `latest`: posterior records of one window;
    `history`: records with window_start, test_id, variant, prob_best and (when known)
    p_value_always_valid of every window so far."""
    plt = _pyplot()
    tests = sorted({str(r["test_id"]) for r in latest})
    figure, axes = plt.subplots(
        len(tests),
        3,
        figsize=(15, POSTERIOR_ROW_IN * len(tests)),
        squeeze=False,
    )
    for row, test_id in enumerate(tests):
        density_axis, best_axis, p_axis = axes[row]
        mine = [r for r in latest if r["test_id"] == test_id]
        low = min(float(r["ci_low"]) for r in mine)
        high = max(float(r["ci_high"]) for r in mine)
        pad = max((high - low) * 0.6, 1e-4)
        x = np.linspace(max(0.0, low - pad), min(1.0, high + pad), 600)
        for record in mine:
            pdf = distributions.beta.pdf(x, float(record["alpha"]), float(record["beta"]))
            density_axis.plot(
                x, pdf, label=f"{record['variant']} (P(best) {float(record['prob_best']):.3f})"
            )
            density_axis.fill_between(x, pdf, alpha=0.15)
        density_axis.set_title(f"{test_id}: posterior success rate")
        density_axis.set_xlabel("success rate")
        density_axis.legend(fontsize=8)
        series: dict[str, dict[object, float]] = defaultdict(dict)
        for record in history:
            if record["test_id"] == test_id:
                series[str(record["variant"])][record["window_start"]] = float(record["prob_best"])
        # Windows as evenly spaced labelled positions: readable for one window or hundreds.
        windows = sorted({w for points in series.values() for w in points})
        position = {w: i for i, w in enumerate(windows)}
        for variant, points in sorted(series.items()):
            ordered = sorted(points.items())
            best_axis.plot(
                [position[w] for w, _ in ordered],
                [p for _, p in ordered],
                marker="o",
                markersize=3,
                label=variant,
            )
        step = max(1, len(windows) // 8)
        best_axis.set_xticks(range(0, len(windows), step))
        best_axis.set_xticklabels([f"{w:%m-%d %H:%M}" for w in windows[::step]])
        best_axis.set_xlim(-0.5, max(len(windows) - 0.5, 0.5))
        best_axis.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
        best_axis.set_ylim(-0.02, 1.02)
        best_axis.set_title("P(best) over the windows")
        best_axis.tick_params(axis="x", labelrotation=30, labelsize=7)
        best_axis.legend(fontsize=8)
        mine_history = [r for r in history if r["test_id"] == test_id]
        _p_value_path(p_axis, mine_history, (levels or {}).get(test_id, 0.05))
    # Fixed margins in inches (titles above, rotated dates below) instead of tight_layout,
    # which lays the text out once more: a third of the picture's cost, paid by every run.
    height = figure.get_figheight()
    between = TITLE_IN + DATES_IN
    figure.subplots_adjust(
        left=0.045, right=0.99, bottom=DATES_IN / height, top=1 - TITLE_IN / height,
        wspace=0.18, hspace=between / (POSTERIOR_ROW_IN - between),
    )  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def _p_value_path(axis, history: list[dict[str, object]], level: float) -> None:
    """Each variant's anytime-valid p-value against the control over the windows, running
    minimum (what the decision reads), on a log scale with the level drawn."""
    series: dict[str, dict[object, float]] = defaultdict(dict)
    # Colours as in the P(best) panel, where every variant (the control too) has a line.
    colours = {v: f"C{i}" for i, v in enumerate(sorted({str(r["variant"]) for r in history}))}
    for record in history:
        value = record.get("p_value_always_valid")
        if value is not None:
            series[str(record["variant"])][record["window_start"]] = float(value)  # type: ignore[arg-type]
    windows = sorted({w for points in series.values() for w in points})  # type: ignore[type-var]
    position = {w: i for i, w in enumerate(windows)}
    for variant, points in sorted(series.items()):
        ordered = sorted(points.items())  # type: ignore[type-var]
        running = np.fmin.accumulate([max(p, 1e-300) for _, p in ordered])
        axis.step(
            [position[w] for w, _ in ordered],
            running,
            where="post",
            marker="o",
            markersize=3,
            color=colours[variant],
            label=variant,
        )
    axis.axhline(level, color="grey", linestyle="--", linewidth=0.8, label=f"level {level:.3g}")
    axis.set_yscale("log")
    axis.set_ylim(top=1.5)
    step = max(1, len(windows) // 8)
    axis.set_xticks(range(0, len(windows), step))
    axis.set_xticklabels([f"{w:%m-%d %H:%M}" for w in windows[::step]])
    axis.set_xlim(-0.5, max(len(windows) - 0.5, 0.5))
    axis.set_title("anytime-valid p vs control (running min)")
    axis.tick_params(axis="x", labelrotation=30, labelsize=7)
    axis.legend(fontsize=8)


def metrics_figure(latest: list[dict[str, object]], dpi: int = 80) -> bytes:
    """One panel per test: for each metric other than the conversion (rows) and variant, the
    observed lift over the control with its anytime-valid confidence sequence (clipped to
    ±100%); a guardrail is marked ◆ with its P(worse by margin). `latest`: the metric records
    of one window, the control's first (metric, metric_role, variant, success_rate_total,
    lift_cs_low, lift_cs_high, prob_worse_by_margin)."""
    return lift_figure(latest, lambda r: str(r["metric"]), dpi)


def segments_figure(latest: list[dict[str, object]], dpi: int = 80) -> bytes:
    """The forest plot of segments: as metrics_figure, a row per dimension, segment and
    variant, from the conversion's segment records of one window."""
    return lift_figure(latest, lambda r: f"{r['dimension']}={r['segment']}", dpi)


def lift_figure(
    latest: list[dict[str, object]], row_of: Callable[[dict[str, object]], str], dpi: int = 80
) -> bytes:
    """One panel per test: a row per `row_of(record)` and variant (the control's records
    give the base), each the observed lift over the control with its anytime-valid
    confidence sequence (clipped to ±100%); guardrails marked ◆ with their P(worse)."""
    plt = _pyplot()
    tests = sorted({str(r["test_id"]) for r in latest})
    figure, axes = plt.subplots(len(tests), 1, figsize=(9, 1 + 1.6 * len(tests)), squeeze=False)
    for row, test_id in enumerate(tests):
        axis = axes[row][0]
        mine = [r for r in latest if r["test_id"] == test_id]
        variants = list(dict.fromkeys(str(r["variant"]) for r in mine))
        labels: list[str] = []
        for metric in dict.fromkeys(row_of(r) for r in mine):
            by_variant = {str(r["variant"]): r for r in mine if row_of(r) == metric}
            base = by_variant[variants[0]].get("success_rate_total")
            for k, variant in enumerate(variants[1:]):
                record = by_variant[variant]
                rate, worse = record.get("success_rate_total"), record.get("prob_worse_by_margin")
                y = len(labels)
                label = f"{metric} · {variant}"
                if record.get("metric_role") == "guardrail":
                    label += " ◆" + ("" if worse is None else f" P(worse) {float(worse):.2f}")  # type: ignore[arg-type]
                labels.append(label)
                if not base or rate is None:
                    continue  # no lift while the control's mean is 0 or unknown
                lift = float(rate) / float(base) - 1  # type: ignore[arg-type]
                low = max(-1.0, _or(record.get("lift_cs_low"), -1.0))
                high = min(1.0, _or(record.get("lift_cs_high"), 1.0))
                axis.plot([low, high], [y, y], color=f"C{k + 1}", linewidth=2)
                axis.plot([min(max(lift, -1.0), 1.0)], [y], "o", color=f"C{k + 1}")
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_yticks(range(len(labels)), labels, fontsize=8)
        axis.set_ylim(len(labels) - 0.5, -0.5)
        axis.set_xlim(-1.0, 1.0)
        axis.set_title(f"{test_id}: lift over {variants[0]}, anytime-valid confidence sequence")
        axis.set_xlabel("relative lift (clipped to ±100%)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def allocation_figure(versions: list[dict[str, object]], dpi: int = 80) -> bytes:
    """A bandit's weights over time, one panel per test: each variant's share of new users
    as a step from each version's moment on. `versions`: test_id, version, weights
    (variant → weight) and the moment it took effect or was first used (`at`, a datetime)."""
    plt = _pyplot()
    tests = sorted({str(v["test_id"]) for v in versions})
    figure, axes = plt.subplots(len(tests), 1, figsize=(9, 3.2 * len(tests)), squeeze=False)
    for axis, test_id in zip(axes[:, 0], tests, strict=True):
        mine = sorted((v for v in versions if v["test_id"] == test_id), key=lambda v: v["version"])
        moments = [v["at"] for v in mine]
        for variant in mine[-1]["weights"]:  # type: ignore[union-attr]
            shares = [v["weights"].get(variant, 0.0) for v in mine]  # type: ignore[union-attr]
            axis.step(moments, shares, where="post", label=str(variant))
        axis.set_ylim(0, 1)
        axis.set_ylabel("share of new users")
        axis.set_title(f"{test_id}: published allocation, versions 1-{mine[-1]['version']}")
        axis.legend(loc="upper left", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def _or(value: object, default: float) -> float:
    return default if value is None else float(value)  # type: ignore[arg-type]
