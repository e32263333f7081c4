"""diana_pipeline.stats.srm: the sample ratio mismatch test against scipy's chi-square, its
zero-weight and no-data cases, and its bad inputs."""

from __future__ import annotations

import pytest
from scipy import stats as scipy_stats

from diana_pipeline import stats


def test_srm_pvalue_matches_scipy_chisquare() -> None:
    counts, weights = [5000, 5300], [0.5, 0.5]
    assert stats.srm_pvalue(counts, weights) == pytest.approx(
        scipy_stats.chisquare(counts, [5150, 5150]).pvalue, rel=1e-12
    )
    counts3, weights3 = [2000, 3100, 4900], [0.2, 0.3, 0.5]
    assert stats.srm_pvalue(counts3, weights3) == pytest.approx(
        scipy_stats.chisquare(counts3, [2000, 3000, 5000]).pvalue, rel=1e-12
    )


def test_srm_pvalue_zero_weights_and_no_data() -> None:
    # A zero-weight arm without exposures is left out (1 degree of freedom, not 2).
    assert stats.srm_pvalue([5000, 0, 5300], [0.5, 0.0, 0.5]) == pytest.approx(
        stats.srm_pvalue([5000, 5300], [0.5, 0.5]), rel=1e-12
    )
    # Any exposure on an arm that should get none contradicts the allocation.
    assert stats.srm_pvalue([5000, 1, 5000], [0.5, 0.0, 0.5]) == 0.0
    assert stats.srm_pvalue([0, 0], [0.5, 0.5]) == 1.0
    many = stats.srm_pvalue([[5000, 5000], [5000, 6000]], [0.5, 0.5])
    assert many.shape == (2,) and many[0] == 1.0 and many[1] < 1e-10


def test_srm_pvalue_bad_inputs() -> None:
    with pytest.raises(ValueError, match="counts has shape"):
        stats.srm_pvalue([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="counts must be finite and ≥ 0"):
        stats.srm_pvalue([1, -2], [0.5, 0.5])
    with pytest.raises(ValueError, match="need at least 2 arms with a positive weight"):
        stats.srm_pvalue([1, 2], [1.0, 0.0])
