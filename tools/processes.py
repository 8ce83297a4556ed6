"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading


def exit_with_parent() -> None:
    """In a multiprocessing child: exit as soon as the parent is gone, even when it was killed with SIGKILL.

    Why the parent's sentinel and not ``getppid``: a forkserver worker's parent is the fork server, which
    outlives the driver while workers are busy.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
