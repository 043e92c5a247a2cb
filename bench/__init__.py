"""Reproducible benchmarks for the agent execution service (see bench/README.md)."""
