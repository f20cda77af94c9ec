"""Pydantic v2 mirrors of the runnerfleet CRDs, one module per kind.

Layer: models (imports only conventions). No I/O.
"""
