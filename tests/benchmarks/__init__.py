"""Benchmarks of django-llmstream against bare relays (not collected by pytest).

Run them with ``make bench`` (``make bench BENCH_ARGS=--quick`` for a short run); see
``docs/performance.rst`` and :mod:`tests.benchmarks.run`.
"""
