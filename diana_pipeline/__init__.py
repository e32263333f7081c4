"""Diana: a real-time Bayesian A/B testing pipeline orchestrated by Dagster."""
