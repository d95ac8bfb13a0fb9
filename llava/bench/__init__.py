"""Benchmarks that print speed and memory figures."""
