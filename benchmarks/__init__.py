"""Benchmarks and the soak: tools beside the system, run as `python -m benchmarks.<name>` from the repository root; not installed."""
