"""Benchmarks of kconstraints against a copy, against the alternatives, and inside train steps.

Run `python -m benchmarks --help`. `cases.py` is the registry of what is
timed; `backend.py` holds every backend-specific line.
"""
