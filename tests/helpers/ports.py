"""Free loopback ports for servers that need several at once (SeaweedFS: master, volume, filer, S3...).

SeaweedFS also listens on every HTTP port + 10000 (gRPC), so each port comes with that twin free.
One free port, with no twin, is `interactavatar.train.engine.free_port()`.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

GRPC_OFFSET = 10000  # weed serves gRPC on every HTTP port + 10000


def port_is_free(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:port now (as servers bind: SO_REUSEADDR, so a port
    whose old connections linger in TIME_WAIT counts as free)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, avoid: Iterable[int] = ()) -> list[int]:
    """`count` distinct ports free now, each with its gRPC twin (port + 10000) free too, none next to
    another's port or twin, nor to a port in `avoid`.

    Drawn at random from 20000-30000 (twins up to 40000)."""
    taken = set(avoid)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(20000, 30000)
        if any(abs(port - other) < 2 or abs(port + GRPC_OFFSET - other) < 2 for other in taken):
            continue
        if port_is_free(port) and port_is_free(port + GRPC_OFFSET):
            chosen.append(port)
            taken |= {port, port + GRPC_OFFSET}
    return chosen
