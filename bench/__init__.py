"""Benchmarks against peers; `python -m bench` writes docs/performance.md."""
