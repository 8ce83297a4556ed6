"""Process checks shared by the tests that kill searches, servers and workers."""

import signal
import subprocess
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


def assert_sigkill_leaves_no_orphan(args: list[str], pid_file: Path, cwd: Path, what: str) -> None:
    """Start the driver ``args``, which starts a child that writes its pid to ``pid_file``; SIGKILL the driver
    once the child runs, and check that the child is gone within 5 s."""
    driver = subprocess.Popen(args, cwd=cwd, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20), f"{what} never started"
        child = int(pid_file.read_text())
        assert child != driver.pid and not process_gone(child)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert wait_for(lambda: process_gone(child), 5), f"{what} (process {child}) outlived the killed driver"
    finally:
        driver.kill()
        driver.wait()
