"""Benchmarks of the service: the serving layer against its own floor, scaling, the pipelines.

``python -m benchmarks`` (``make bench``) runs every figure, prints a table and writes
``benchmarks/results/latest.json``. See ``python -m benchmarks --help``.
"""
