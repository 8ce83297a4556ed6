"""Process checks shared by the tests that kill searches, servers and workers."""

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
