"""Process checks shared by the tests that kill searches, servers and workers."""

import time
from collections.abc import Callable
from pathlib import Path


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (killed, waiting to be reaped by whoever adopted it).

    A process can vanish between opening its /proc file and reading it: that read raises
    ProcessLookupError (an OSError), which means gone just as a missing file does.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status


def wait_for(predicate: Callable[[], object], timeout_s: float) -> bool:
    """Whether ``predicate`` holds within ``timeout_s`` seconds (polled every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
