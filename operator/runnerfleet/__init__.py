"""runnerfleet: a Kubernetes operator for ephemeral, one-job GitHub Actions runners.

The package is split into rooms with enforced layering (see pyproject's import-linter
contracts): handlers -> services -> gateways / planning / builders -> models -> conventions.
`localcluster` and `sim` are tooling shared by tests, the demo and benchmarks.
"""

__version__ = "0.1.0"
