"""Services orchestrate plan -> gateways -> status for one reconcile.

Layer: services (imports gateways, planning, builders, models). Does I/O only through gateways.
"""
