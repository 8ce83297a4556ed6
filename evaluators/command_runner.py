"""Supervisor of one ``--task command`` evaluation: the command never outlives the search.

``python -I command_runner.py PARENT_PID [--watch-fd FD] -- COMMAND`` runs ``/bin/sh -c COMMAND``
in a new session (its own process group) and waits for it, checking every ``POLL_S`` that its
parent is still ``PARENT_PID`` and, with ``--watch-fd``, that the inherited pipe ``FD`` has not
reached end-of-file (the evaluator passes the sentinel of the search process that started its
worker: a worker can outlive a killed search while it is busy). When either is gone (a search
or worker killed with SIGKILL: nothing else could clean up), or the runner gets SIGINT or SIGHUP,
it kills the command's whole process group with SIGKILL and exits. SIGTERM (a scheduler stopping
the training, a timeout) is passed on to the group first, so that a training can save what it
needs; whatever is left ``GRACE_S`` seconds later is killed with SIGKILL. When the shell
exits, what it left running in its group (background jobs) is killed too, and the shell's exit
status is passed through (128 + N for a shell killed by signal N, as shells report it).

Standard library only, and run by file path with ``-I``: it works wherever the evaluator runs
(a worker whose working directory is elsewhere, a Ray node), whatever ``PYTHONPATH`` says.
Processes that leave the group themselves (``setsid``, daemons) are out of its reach.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from types import FrameType

POLL_S = 0.05  # how soon a finished command or a vanished parent is noticed
GRACE_S = 10.0  # after SIGTERM, how long the command may take to end before SIGKILL


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop(child: subprocess.Popen[bytes] | None, status: int) -> None:
    """Kill the command's group, reap the shell, exit: the one way out other than the shell finishing."""
    if child is not None:
        _kill_group(child.pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
    os._exit(status)


def _group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies do not count). Where there is no /proc to
    read, whether the shell that leads it is."""
    if not os.path.isdir("/proc/self"):
        return os.waitid(os.P_PID, pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _terminate(child: subprocess.Popen[bytes], status: int) -> None:
    """SIGTERM to the command's group, up to GRACE_S seconds for every process in it to end (the shell may end at
    once while the training still saves its work), then :func:`_stop`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and _group_running(child.pid):
        time.sleep(POLL_S)
    _stop(child, status)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="command_runner.py")
    parser.add_argument("parent", type=int, help="pid of the evaluating process")
    parser.add_argument("--watch-fd", type=int, help="a pipe that reaches end-of-file when the search is gone")
    parser.add_argument("command", help="run with /bin/sh -c")
    args = parser.parse_args(argv)
    watched = [] if args.watch_fd is None else [args.watch_fd]
    child: subprocess.Popen[bytes] | None = None
    early: list[int] = []  # a signal that came while the shell was being started

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if child is None:
            early.append(signum)
        elif signum == signal.SIGTERM:
            _terminate(child, 128 + signum)
        else:
            _stop(child, 128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    if os.getppid() != args.parent:
        return 1
    child = subprocess.Popen(["/bin/sh", "-c", args.command], start_new_session=True)
    if early:
        _stop(child, 128 + early[0])
    # WNOWAIT leaves the finished shell unreaped, so its group id cannot be reused before the kill below.
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        search_gone, _, _ = select.select(watched, [], [], POLL_S)  # nothing is ever written: readable = EOF
        if search_gone or os.getppid() != args.parent:
            _stop(child, 1)
    _kill_group(child.pid)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
