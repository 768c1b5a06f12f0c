"""Give each BentoML worker a listening socket of its own, so the kernel spreads connections.

BentoML's arbiter binds one socket and every worker accepts on it. Whichever worker wins the
accept race takes the connection, and one often wins them all: measured here, 8 keep-alive
clients landed 8/0 on two workers in 2 runs of 3 (one core idle, half the throughput), and 32
clients 23/9. With SO_REUSEPORT each worker listens on a socket of its own on the same port,
and the kernel assigns each new connection to one of them by a hash of its addresses.

`balance_listener` runs in each worker before uvicorn starts accepting: it marks the shared
socket SO_REUSEPORT, binds and listens on a new socket for the same address, puts the new one
in place of the shared one under the same descriptor number (the number uvicorn is about to
listen on), and takes the shared socket out of the kernel's choice with shutdown(), so no
connection waits on a socket nobody accepts from. Connections that were queued on the shared
socket at that moment (made before any worker was ready) are reset; clients retry those as
they would retry a server that was not up yet.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Sequence

log = logging.getLogger("digitserve")


def worker_option(argv: Sequence[str], name: str) -> int | None:
    """A number BentoML passed this worker on its command line (`--fd 3`), or None."""
    for flag, value in itertools.pairwise(argv):
        if flag == name and value.isdigit():
            return int(value)
    return None


def balance_listener(fd: int, backlog: int = 2048) -> bool:
    """Replace the shared TCP listener at `fd` by this process's own SO_REUSEPORT listener.

    Returns False, and changes nothing, when `fd` is not a listening TCP socket (a Unix
    socket, or a platform without SO_REUSEPORT).
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        shared = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    with shared:
        # Not SO_ACCEPTCONN: a worker restarted after a crash finds the shared socket shut
        # down by its predecessor, and must still get a socket of its own.
        if shared.family not in (socket.AF_INET, socket.AF_INET6) or shared.type != (
            socket.SOCK_STREAM
        ):
            return False
        address = shared.getsockname()
        try:
            # Every socket bound to a port must allow reuse for another to join it.
            shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            own = _listen_like(shared, address, backlog)
        except OSError as exc:
            # The shared socket stays as it was; uvicorn listens on it as BentoML meant.
            log.warning("worker %d shares the listening socket: %s", os.getpid(), exc)
            return False
        with own:
            os.dup2(own.fileno(), fd)  # `fd` now names this worker's socket
        # Stop it listening, for every process; a worker before this one may have already.
        with contextlib.suppress(OSError):
            shared.shutdown(socket.SHUT_RDWR)
    log.info("worker %d listens on a socket of its own for %s", os.getpid(), address[:2])
    return True


def _listen_like(shared: socket.socket, address: tuple[str, int], backlog: int) -> socket.socket:
    """A new SO_REUSEPORT listener with the shared socket's family and address."""
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    try:
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if shared.family == socket.AF_INET6:
            v6only = shared.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        own.bind(address)
        own.listen(backlog)
    except OSError:
        own.close()
        raise
    return own
