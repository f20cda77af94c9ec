"""The per-team listener process: finds queued GitHub jobs and reports each scale set's demand.

Layer: a separate process; talks to the outside only through the gateways.
"""
