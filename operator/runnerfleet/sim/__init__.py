"""Simulators used by tests, the demo and benchmarks: a fake GitHub and simulated runners.

Layer: tooling. Never imported by the operator's own layers.
"""
