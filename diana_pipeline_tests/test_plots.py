"""The posterior picture renders to a PNG for any number of tests and windows."""

from __future__ import annotations

from datetime import datetime

from PIL import Image  # matplotlib's own dependency

from diana_pipeline.plots import posterior_figure


def record(test_id: str, variant: str, alpha: float, beta: float, best: float, hour: int) -> dict:
    return {
        "test_id": test_id, "variant": variant, "alpha": alpha, "beta": beta, "prob_best": best,
        "ci_low": 0.2, "ci_high": 0.6, "window_start": datetime(2026, 11, 21, hour),
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
    png = posterior_figure(latest, history)
    image = Image.open(__import__("io").BytesIO(png))
    assert image.format == "PNG"
    assert image.size == (800, 2 * 256)  # 10 x 3.2 inches per test at 80 dpi
