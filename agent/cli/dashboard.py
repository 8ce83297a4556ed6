"""``dashboard``: the run database live in optuna-dashboard, a view users of Optuna already know.

optuna-dashboard reads Optuna storages, so the runs are mirrored into one beside the database
(agent/runs/optuna_mirror.py) and the mirror is kept in step every second: a search running in
another process shows each evaluation within seconds.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import threading
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna

from agent.cli.common import DEFAULT_DB, UsageError, console
from agent.runs.optuna_mirror import OptunaMirror, mirror_path

SYNC_INTERVAL_S = 1.0
STOP_WAIT_S = 5.0  # how long Ctrl-C waits for a sync in progress


def port_number(text: str) -> int:
    """A TCP port, checked before the mirror file is made."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def run_dashboard(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python main.py dashboard",
        description="show the runs of a database in optuna-dashboard, live (mirrored into DB.optuna.db)",
    )
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--port", type=port_number, default=8080, help="1 to 65535 (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    args = parser.parse_args(argv)
    db = Path(args.db)
    if not db.is_file():
        raise UsageError(f"database {db} does not exist; run a search first or pass --db")
    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError("optuna-dashboard is not installed; pip install '.[dashboard]'") from None
    check_port(args.host, args.port)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one line per study the mirror creates
    mirror = OptunaMirror(db, mirror_path(db))
    stop = threading.Event()
    syncer = threading.Thread(target=keep_syncing, args=(mirror, stop), name="optuna-mirror", daemon=True)
    syncer.start()
    console.print(f"optuna-dashboard: http://{args.host}:{args.port}/dashboard (Ctrl-C stops it)", highlight=False)
    stop_requested = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C stops it even when started as a background job, which starts with SIGINT ignored; so does kill PID
    for signum in previous:
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        serve(optuna_dashboard.wsgi(mirror.url), args.host, args.port, stop_requested)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.set()
        syncer.join(STOP_WAIT_S)
        if syncer.is_alive():  # a sync stuck on a busy database: Ctrl-C must still stop the dashboard
            console.print("stopped mid-sync; the next dashboard completes the mirror", highlight=False)
        else:
            mirror.close()
    return 0


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line per request in the terminal."""


def serve(app: Any, host: str, port: int, stop_requested: threading.Event) -> None:
    """Serve ``app`` from a thread until ``stop_requested``. Why not optuna-dashboard's ``run_server``: it serves
    in the main thread, where Ctrl-C's KeyboardInterrupt can land inside a request, and wsgiref's request
    handler swallows every exception there (it logs it as an error page), so the server went on serving.
    Here the signal only sets ``stop_requested``, and the main thread shuts the server down."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("DashboardServer", (WSGIServer,), {"address_family": family})
    with make_server(host, port, app, server_class, QuietHandler) as server:
        threading.Thread(target=server.serve_forever, name="dashboard-server", daemon=True).start()
        while not stop_requested.wait(0.5):
            pass
        stopper = threading.Thread(target=server.shutdown, daemon=True)  # ends after the request in progress
        stopper.start()
        stopper.join(STOP_WAIT_S)


def check_port(host: str, port: int) -> None:
    """Fail before mirroring when the server could not listen; the server binds the same way (SO_REUSEADDR)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is in use; pass another with --port") from None
        raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}; pass --host or --port") from None


def keep_syncing(mirror: OptunaMirror, stop: threading.Event) -> None:
    """Sync now and every second until ``stop``. The first sync runs beside the server, which is up at once
    (a first sync of a large database takes a while); a failed sync (a database busy for long) is said once
    and retried, never fatal."""
    first, last_error = True, None
    while not stop.is_set():
        try:
            added = mirror.sync(stop)
            if first:
                console.print(f"mirrored {added} new evaluation(s) into {mirror.path}", highlight=False)
            first, last_error = False, None
        except Exception as error:
            if str(error) != last_error:
                console.print(f"[yellow]sync failed, retrying:[/yellow] {error}", highlight=False)
            last_error = str(error)
        stop.wait(SYNC_INTERVAL_S)
