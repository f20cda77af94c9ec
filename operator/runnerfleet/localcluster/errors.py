"""Errors of the local control plane, each carrying a one-line cause and fix.

Layer: tooling. No I/O.
"""

from __future__ import annotations


class ClusterError(Exception):
    """The local control plane could not be started, queried or stopped.

    `str(err)` is a single line naming the cause and the fix, fit to print as-is.
    """


class PortInUseError(ClusterError):
    """A port the control plane was told to use is already taken."""


class ComponentCrashedError(ClusterError):
    """A component exited while it was starting."""


class ReadinessTimeoutError(ClusterError):
    """A component kept running but did not become ready in time."""
