"""Exact Bayesian statistics for A/B tests. Pure numpy/scipy, no Dagster, no Monte Carlo.

- quadrature: the logit-space Gauss-Legendre engine (grid, densities and CDFs at its nodes,
  one arm's CDF anywhere) and the input checks shared by every family of arms;
- beta: the Beta-Bernoulli posteriors on it: prob_best, expected_loss (and both at once),
  prob_superiority, credible_interval, uplift_interval;
- gamma: Gamma posteriors (count metrics): prob_best_gamma, expected_loss_gamma, both;
- normal: normal posteriors (means, ratios): prob_best_normal, expected_loss_normal, both;
  relative_lift and prob_lift_below (a guardrail's P(worse by its margin), any family);
- srm: srm_pvalue, the sample ratio mismatch test; srm_e_values and srm_anytime_pvalue, its
  anytime-valid form for weights that move (a bandit);
- thompson: thompson_allocation (plain or top-two) and top_two_weights, the bandit's
  traffic weights; stratified: period_weighted_rates, an arm's rate when its share moved;
- sequential: always_valid_pvalues and lift_confidence_sequence, anytime-valid inference
  that stays valid under continuous monitoring; sequential_normal: the same for metrics
  summarised by a mean and a standard error (the normal mSPRT on the relative lift);
- decision: decide, Decision, Verdict, PROB_BEST_TO_WIN, the decision rule, and guard,
  Guardrail, GUARDRAIL_RISK, the guardrails a winner must pass (policy, not maths).

Everything public is re-exported here, so callers write `stats.prob_best(...)`.
"""

from diana_pipeline.stats._types import ArrayLike, FloatArray
from diana_pipeline.stats.beta import (
    credible_interval,
    expected_loss,
    prob_best,
    prob_best_and_expected_loss,
    prob_superiority,
    uplift_interval,
)
from diana_pipeline.stats.decision import (
    GUARDRAIL_RISK,
    PROB_BEST_TO_WIN,
    AnytimeEvidence,
    Decision,
    Guardrail,
    Verdict,
    decide,
    guard,
)
from diana_pipeline.stats.gamma import (
    expected_loss_gamma,
    prob_best_and_expected_loss_gamma,
    prob_best_gamma,
)
from diana_pipeline.stats.normal import (
    expected_loss_normal,
    prob_best_and_expected_loss_normal,
    prob_best_normal,
    prob_lift_below,
    relative_lift,
)
from diana_pipeline.stats.sequential import (
    DEFAULT_EXPECTED_LIFT,
    always_valid_pvalues,
    lift_confidence_sequence,
)
from diana_pipeline.stats.sequential_normal import (
    always_valid_pvalues_normal,
    lift_confidence_sequence_normal,
)
from diana_pipeline.stats.srm import srm_anytime_pvalue, srm_e_values, srm_pvalue
from diana_pipeline.stats.stratified import period_weighted_rates
from diana_pipeline.stats.thompson import thompson_allocation, top_two_weights

__all__ = [
    "DEFAULT_EXPECTED_LIFT",
    "GUARDRAIL_RISK",
    "PROB_BEST_TO_WIN",
    "AnytimeEvidence",
    "ArrayLike",
    "Decision",
    "FloatArray",
    "Guardrail",
    "Verdict",
    "always_valid_pvalues",
    "always_valid_pvalues_normal",
    "credible_interval",
    "decide",
    "expected_loss",
    "expected_loss_gamma",
    "expected_loss_normal",
    "guard",
    "lift_confidence_sequence",
    "lift_confidence_sequence_normal",
    "period_weighted_rates",
    "prob_best",
    "prob_best_and_expected_loss",
    "prob_best_and_expected_loss_gamma",
    "prob_best_and_expected_loss_normal",
    "prob_best_gamma",
    "prob_best_normal",
    "prob_lift_below",
    "prob_superiority",
    "relative_lift",
    "srm_anytime_pvalue",
    "srm_e_values",
    "srm_pvalue",
    "thompson_allocation",
    "top_two_weights",
    "uplift_interval",
]
