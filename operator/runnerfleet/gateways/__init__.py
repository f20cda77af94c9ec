"""Gateways: the only modules that talk to the Kubernetes API and to GitHub.

Layer: gateways. Each maps its client's errors onto runnerfleet's own exception types.
"""
