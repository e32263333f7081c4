"""The posterior picture renders to a PNG for any number of tests and windows."""

from __future__ import annotations

import io
from datetime import datetime

import numpy as np
from PIL import Image  # matplotlib's own dependency

from diana_pipeline.plots import metrics_figure, posterior_figure


def record(test_id: str, variant: str, alpha: float, beta: float, best: float, hour: int) -> dict:
    return {
        "test_id": test_id, "variant": variant, "alpha": alpha, "beta": beta, "prob_best": best,
        "ci_low": 0.2, "ci_high": 0.6, "window_start": datetime(2026, 11, 21, hour),
        "p_value_always_valid": None if variant == "control" else 0.5 / hour,
    }  # fmt: skip


def test_one_row_per_test() -> None:
    latest = [
        record(t, v, a, 100 - a, b, 12)
        for t in ("t1", "t2")
        for v, a, b in (("control", 35, 0.1), ("treatment", 45, 0.9))
    ]
    history = latest + [
        record(t, v, a, 100 - a, 0.5, 11)
        for t in ("t1", "t2")
        for v, a in (("control", 30), ("treatment", 31))
    ]
    png = posterior_figure(latest, history, levels={"t1": 0.05})
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    # Two rows (one per test) of three panels, each with something drawn in it: the
    # coloured lines of the variants (pure greys are axes, text and the level line).
    pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    for row in range(2):
        for column in range(3):
            panel = pixels[
                row * height // 2 : (row + 1) * height // 2,
                column * width // 3 : (column + 1) * width // 3,
            ]
            coloured = (panel.max(axis=-1) - panel.min(axis=-1)) > 60
            assert coloured.mean() > 0.002, (row, column)


def test_records_without_the_anytime_valid_figures_still_plot() -> None:
    old = [{k: v for k, v in record("t1", v, 40, 60, 0.5, 10).items()
            if k != "p_value_always_valid"} for v in ("control", "treatment")]  # fmt: skip
    assert posterior_figure(old, old).startswith(b"\x89PNG")


def test_the_metrics_picture_has_a_panel_per_test_with_each_lift_drawn() -> None:
    def metric_record(test_id: str, metric: str, variant: str, rate: float | None) -> dict:
        treated, guard = variant != "control", metric == "revenue"
        return {"test_id": test_id, "metric": metric, "variant": variant,
                "metric_role": "guardrail" if guard else "secondary",
                "success_rate_total": rate, "lift_cs_low": -0.1 if treated else 0.0,
                "lift_cs_high": None if treated else 0.0,
                "prob_worse_by_margin": 0.3 if treated and guard else None}  # fmt: skip

    latest = [
        metric_record(t, m, v, rate)
        for t in ("t1", "t2")
        for m in ("revenue", "orders")
        for v, rate in (("control", 2.0), ("treatment", 2.2))
    ] + [metric_record("t2", "aov", "control", None), metric_record("t2", "aov", "treatment", 1)]
    image = Image.open(io.BytesIO(metrics_figure(latest)))
    pixels = np.asarray(image.convert("RGB")).astype(int)
    height = pixels.shape[0]
    for row in range(2):
        panel = pixels[row * height // 2 : (row + 1) * height // 2]
        assert ((panel.max(axis=-1) - panel.min(axis=-1)) > 60).mean() > 0.001, row
