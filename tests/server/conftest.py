"""Fixtures for server tests: a populated root folder and a server on an ephemeral port."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from webserver import Server
from webserver.testing import running_server

#: Every socket a test opens gets this timeout, so a wrong answer fails instead of hanging.
NET_TIMEOUT = 10.0


@pytest.fixture
def www(tmp_path: Path) -> Path:
    """A root folder with a text file, a binary file, a subfolder with an index, and a sibling
    folder outside the root holding a secret that must never be served."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"hello, world\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 64)
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>\n")
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"TOP SECRET\n")
    return root


@pytest.fixture
def server(www: Path) -> Iterator[Server]:
    with running_server(root=www, access_log=False) as srv:
        yield srv


def connect(server: Server) -> socket.socket:
    """A raw client socket to ``server`` with the test timeout."""
    host, port = server.listen()  # the bound address, also once the server has stopped
    return socket.create_connection((host, port), timeout=NET_TIMEOUT)


def recv_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def open_fds() -> int:
    """Descriptors this process holds (Linux), to prove a test leaked none."""
    return len(os.listdir("/proc/self/fd"))
