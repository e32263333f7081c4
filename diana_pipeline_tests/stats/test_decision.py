"""diana_pipeline.stats.decision: each verdict of the decision rule, and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from diana_pipeline import stats

NAMES = ["control", "treatment"]


def evidence(p: float, low: float = -0.5, high: float = 0.5, rope: float = 0.01):
    return stats.AnytimeEvidence([[np.nan, p], [p, np.nan]], [0.0, low], [0.0, high], 0.05, rope)


def decide(best, loss, exposures, found=None):
    return stats.decide(best, loss, exposures, 0.001, 100, found or evidence(0.01), NAMES)


def test_decide_each_verdict() -> None:
    winner = decide([0.03, 0.97], [0.02, 1e-4], [5000, 5000])
    assert (winner.verdict, winner.winner) == ("winner", "treatment")
    assert "P(best) = 0.9700" in winner.reason and "p = 0.01 ≤ 0.05" in winner.reason
    unsure = decide([0.4, 0.6], [0.01, 0.004], [5000, 5000])
    assert (unsure.verdict, unsure.winner) == ("keep running", None)
    assert "0.6000 < 0.95" in unsure.reason
    costly = decide([0.02, 0.98], [0.05, 0.002], [5000, 5000])
    assert costly.verdict == "keep running"
    assert "expected loss 2.00e-03 ≥ threshold of caring 0.001" in costly.reason
    early = decide([0.001, 0.999], [0.05, 0.0], [99, 5000])
    assert (early.verdict, early.winner) == ("not enough data", None)
    assert "control below the minimum sample of 100" in early.reason


def test_a_bayesian_winner_needs_the_anytime_valid_test_to_reject() -> None:
    peeked = decide([0.03, 0.97], [0.02, 1e-4], [5000, 5000], evidence(0.2))
    assert peeked.verdict == "keep running"
    assert "anytime-valid p = 0.2 > 0.05 against control" in peeked.reason


def test_a_lift_inside_the_rope_is_no_meaningful_difference() -> None:
    flat = decide([0.45, 0.55], [0.001, 0.0008], [90_000, 90_000], evidence(0.9, -0.008, 0.009))
    assert (flat.verdict, flat.winner) == ("no meaningful difference", None)
    assert "within ±1.00%" in flat.reason and "treatment [-0.80%, +0.90%]" in flat.reason
    wider = decide([0.45, 0.55], [0.001, 0.0008], [90_000, 90_000], evidence(0.9, -0.008, 0.02))
    assert wider.verdict == "keep running"


def test_with_more_arms_the_winner_rejects_every_other_at_the_bonferroni_level() -> None:
    names = ["control", "b", "c"]
    p = [[np.nan, 0.3, 0.001], [0.3, np.nan, 0.02], [0.001, 0.02, np.nan]]
    found = stats.AnytimeEvidence(p, [0.0, -0.1, 0.05], [0.0, 0.2, 0.3], alpha=0.05)
    best, loss = [0.0, 0.02, 0.98], [0.05, 0.01, 1e-5]
    winner = stats.decide(best, loss, [9000] * 3, 0.001, 100, found, names)
    assert (winner.verdict, winner.winner) == ("winner", "c")
    assert "weakest: b" in winner.reason and "≤ 0.025" in winner.reason
    p[1][2] = p[2][1] = 0.03  # c against b no longer clears 0.05 / 2
    found = stats.AnytimeEvidence(p, [0.0, -0.1, 0.05], [0.0, 0.2, 0.3], alpha=0.05)
    assert stats.decide(best, loss, [9000] * 3, 0.001, 100, found, names).verdict == (
        "keep running"
    )


def test_decide_bad_inputs() -> None:
    with pytest.raises(ValueError, match="need at least 2 arms"):
        stats.decide([1.0], [0.0], [10], 0.01, 1, evidence(0.5))
    with pytest.raises(ValueError, match="must be 1-D and of one length"):
        stats.decide([0.5, 0.5], [0.0], [10, 10], 0.01, 1, evidence(0.5))
    with pytest.raises(ValueError, match="p-value matrix"):
        stats.decide(
            [0.5, 0.5],
            [0.0, 0.0],
            [10, 10],
            0.01,
            1,
            stats.AnytimeEvidence([0.5], [0.0, 0.0], [0.0, 0.0]),
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exposures": [np.nan, 5000]}, "exposures"),
        ({"best": [np.nan, 0.97]}, "prob_best"),
        ({"best": [0.03, 2.0]}, "prob_best"),
        ({"loss": [0.02, np.nan]}, "expected_loss"),
        ({"threshold": np.nan}, "threshold_of_caring"),
        ({"threshold": 0.0}, "threshold_of_caring"),
        ({"minimum_sample": 0}, "minimum_sample"),
        ({"minimum_sample": 2.5}, "minimum_sample"),
        ({"names": []}, "names"),
        ({"names": ["control", ""]}, "names"),
        ({"evidence": evidence(np.nan)}, "p-values"),
        ({"evidence": evidence(1.5)}, "p-values"),
        ({"evidence": evidence(0.01, low=np.nan)}, "lift_low"),
        ({"evidence": evidence(0.01, high=-2.0)}, "lift_high"),
        ({"evidence": evidence(0.01, rope=np.nan)}, "rope"),
    ],
)
def test_bad_figures_are_refused_not_decided_on(change: dict, message: str) -> None:
    """Each of these used to pass: NaN exposures skipped the minimum sample and declared a
    winner, a NaN P(best) gave "keep running" with a false reason."""
    good = {
        "best": [0.03, 0.97], "loss": [0.02, 1e-4], "exposures": [5000, 5000],
        "threshold": 0.001, "minimum_sample": 100, "evidence": evidence(0.01), "names": NAMES,
    }  # fmt: skip
    args = {**good, **change}
    with pytest.raises(ValueError, match=message):
        stats.decide(
            args["best"], args["loss"], args["exposures"], args["threshold"],
            args["minimum_sample"], args["evidence"], args["names"],
        )  # fmt: skip


def test_guardrails_bind_a_winner_other_than_the_control_only() -> None:
    won = stats.Decision("winner", "control", "control wins")
    rails = [stats.Guardrail("revenue", 0.01, 0.5)]
    assert stats.guard(won, rails, "control") == won  # the control is what they compare to
    treated = stats.Decision("winner", "treatment", "treatment wins")
    blocked = stats.guard(treated, [stats.Guardrail("errors", 0.05, 0.01), *rails], "control")
    assert (blocked.verdict, blocked.winner) == ("keep running", None)
    assert blocked.reason.startswith("guardrail revenue blocks treatment")
    keep = stats.Decision("keep running", None, "leader treatment")
    assert stats.guard(keep, rails, "control") == keep
