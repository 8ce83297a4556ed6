"""What every command of the CLI shares: its error type, exit codes and consoles."""

from __future__ import annotations

from rich.console import Console

DEFAULT_DB = "runs/searches.db"
EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_INTERRUPTED = 2, 3, 130

console = Console(stderr=True)


class UsageError(ValueError):
    """Bad input found by the CLI itself; printed as one ``error:`` line, exit code 2."""


def stdout_console() -> Console:
    """Tables for stdout; wide enough for run ids when output is not a terminal."""
    out = Console()
    return out if out.is_terminal else Console(width=160)
