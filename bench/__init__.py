"""Replay-throughput benchmarks for the chain listener (`python -m bench`).

Not part of the installed package and never run as a timed test: ``tests/bench/test_bench_smoke.py``
runs every scenario on a few hundred events and checks only that all paths journal the same
rows. See ``bench/README.md`` for what is measured and how the events are produced.
"""
