"""Benchmarks: this project's servers side by side with Redis pub/sub and a tutorial baseline.

``python -m bench`` runs everything and prints a table; BENCHMARKS.md records the results.
"""
