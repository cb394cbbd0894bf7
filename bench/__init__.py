"""Benchmark scripts and their results, run from a checkout (not installed). The long-context evaluation
library behind `l2m eval` is `agent.evals`."""
