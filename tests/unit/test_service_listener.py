"""Per-worker listening sockets on real loopback sockets, in one process: each "worker"
descriptor starts as a duplicate of one shared listener, as BentoML's workers inherit it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from service.listener import balance_listener, worker_option


@pytest.fixture()
def shared() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock
    sock.close()


def accept_all(fd: int) -> int:
    """Connections waiting on the listener at `fd`, accepted and closed."""
    listener = socket.socket(fileno=os.dup(fd))
    listener.setblocking(False)
    accepted = 0
    with listener:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return accepted
            conn.close()
            accepted += 1


def connect(port: int, clients: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(clients)]


def test_each_worker_gets_its_own_socket_and_a_share_of_the_connections(
    shared: socket.socket,
) -> None:
    port = shared.getsockname()[1]
    workers = [os.dup(shared.fileno()) for _ in range(2)]
    try:
        assert all(balance_listener(fd) for fd in workers)
        assert all(socket.socket(fileno=os.dup(fd)).getsockname()[1] == port for fd in workers)
        assert not shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        clients = connect(port, 64)
        counts = [accept_all(fd) for fd in workers]
        # All 64 reached a worker (none waits on the shared socket) and both got some: one
        # worker getting all 64 by the kernel's hash has odds of 1 in 2**63.
        assert sum(counts) == 64 and min(counts) > 0, counts
        for client in clients:
            client.close()

        # A worker restarted after a crash finds the shared socket shut down already.
        restarted = os.dup(shared.fileno())
        workers.append(restarted)
        assert balance_listener(restarted)
        clients = connect(port, 64)
        counts = [accept_all(fd) for fd in workers]
        assert sum(counts) == 64 and min(counts) > 0, counts  # odds of a miss: 1 in 10**11
        for client in clients:
            client.close()
    finally:
        for fd in workers:
            os.close(fd)


def test_a_worker_leaves_a_unix_socket_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(tmp_path / "s"))
    unix.listen(8)
    with unix:
        assert not balance_listener(unix.fileno())
        assert unix.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)


def test_a_closed_descriptor_is_left_alone() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    assert not balance_listener(fd)


def test_worker_option_reads_bentomls_worker_command_line() -> None:
    argv = ["service.py", "service.bento:DigitServe", "--fd", "6", "--backlog", "2048"]
    assert worker_option(argv, "--fd") == 6
    assert worker_option(argv, "--backlog") == 2048
    assert worker_option(argv, "--worker-id") is None
    assert worker_option(["x", "--fd"], "--fd") is None
