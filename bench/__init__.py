"""Benchmarks of L2M against its baselines; `bench.evals` holds the long-context evaluation suite."""
