"""Benchmark scripts: run them as `python -m benchmarks.<name>`; see docs/benchmarks.md."""
