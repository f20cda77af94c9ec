"""kopf handlers: thin adapters that parse a body, call one service, and report status.

Layer: handlers (top of the operator; imports services and models).
"""
