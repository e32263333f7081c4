"""diana_pipeline.stats.decision: each verdict of the decision rule, and its bad inputs."""

from __future__ import annotations

import pytest

from diana_pipeline import stats


def test_decide_each_verdict() -> None:
    names = ["control", "treatment"]
    winner = stats.decide([0.03, 0.97], [0.02, 1e-4], [5000, 5000], 0.001, 100, names)
    assert (winner.verdict, winner.winner) == ("winner", "treatment")
    assert "P(best) = 0.9700" in winner.reason
    unsure = stats.decide([0.4, 0.6], [0.01, 0.004], [5000, 5000], 0.001, 100, names)
    assert (unsure.verdict, unsure.winner) == ("keep running", None)
    assert "0.6000 < 0.95" in unsure.reason
    costly = stats.decide([0.02, 0.98], [0.05, 0.002], [5000, 5000], 0.001, 100, names)
    assert costly.verdict == "keep running"
    assert "expected loss 2.00e-03 ≥ threshold of caring 0.001" in costly.reason
    early = stats.decide([0.001, 0.999], [0.05, 0.0], [99, 5000], 0.001, 100, names)
    assert (early.verdict, early.winner) == ("not enough data", None)
    assert "control below the minimum sample of 100" in early.reason


def test_decide_bad_inputs() -> None:
    with pytest.raises(ValueError, match="need at least 2 arms"):
        stats.decide([1.0], [0.0], [10], 0.01, 1)
    with pytest.raises(ValueError, match="must be 1-D and of one length"):
        stats.decide([0.5, 0.5], [0.0], [10, 10], 0.01, 1)
