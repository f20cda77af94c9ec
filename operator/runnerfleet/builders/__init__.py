"""Pure builders: models in, Kubernetes manifests (plain dicts) out.

Layer: builders (imports models and conventions). No client, no clock, no environment reads.
"""
