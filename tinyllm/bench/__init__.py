"""Benchmarks behind ``tinyllm bench``: each prints one JSON line per run."""
