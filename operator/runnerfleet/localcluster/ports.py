"""Port choice for the local control plane: free ports by default, checked ports when pinned.

Layer: tooling. Binds sockets on 127.0.0.1 briefly to test availability.
"""

from __future__ import annotations

import contextlib
import socket

from runnerfleet.localcluster.errors import PortInUseError


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def check_free(port: int, purpose: str, option: str) -> None:
    """Raise PortInUseError (cause and fix in one line) if 127.0.0.1:`port` is taken."""
    try:
        _bind(port).close()
    except OSError as err:
        raise PortInUseError(
            f"port {port} on 127.0.0.1 (wanted for {purpose}) is already in use ({err.strerror}): "
            f"stop whatever holds it, or pass a different {option} (omit it to pick a free port)"
        ) from err


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(_bind(0)) for _ in range(count)]
        return [int(s.getsockname()[1]) for s in socks]
