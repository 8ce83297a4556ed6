"""Checks of the outside world made before any work, so that a bad path or address costs one line: a file
standing where a folder should be, an address nothing answers at."""

from __future__ import annotations

import socket
from pathlib import Path


def file_in_the_way(path: Path) -> Path | None:
    """The first of ``path``'s parents that exists as a file (so no folder can be made there), or None."""
    return next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)


def tcp_unreachable(host: str, port: int, timeout_s: float) -> str | None:
    """Why no TCP connection opens to ``host:port`` within ``timeout_s`` (the OS's reason); None when one does."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        return error.strerror or str(error) or type(error).__name__
    return None
