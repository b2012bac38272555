"""Benchmark scripts (not tests): each prints JSON and asserts nothing about time."""
