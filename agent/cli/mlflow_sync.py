"""``mlflow``: log a database's runs to MLflow after the fact: runs searched without ``--mlflow``, or whose
tracking server was down for a while. The same idempotent sync as ``--mlflow`` (agent/runs/mlflow_tracking.py):
what MLflow already holds is not logged again."""

from __future__ import annotations

import argparse

from agent.cli.common import DEFAULT_DB, stdout_console
from agent.cli.runs import reading, stored_run
from agent.config import SearchConfig
from agent.driver import SearchError
from agent.runs.mlflow_tracking import ENDED, EXPERIMENT, MlflowTracker, first_line


def run_mlflow(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python main.py mlflow",
        description="log runs to MLflow: a parent run per run, a child run per evaluation; only what MLflow lacks",
    )
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--run-id", action="append", help="a run to log (repeatable; default: every run)")
    parser.add_argument(
        "--uri", help="tracking URI (default: the run's --mlflow, else $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    args = parser.parse_args(argv)
    out = stdout_console()
    with reading(args.db) as store:
        for run_id in args.run_id or [run["run_id"] for run in store.list_runs()]:
            run = stored_run(store, run_id, args.db)
            uri = args.uri if args.uri is not None else SearchConfig.from_stored(run["config"]).mlflow or ""
            tracker = MlflowTracker(store, run_id, uri)
            try:
                added, status = tracker.sync(), ENDED.get(run["status"])  # a run searching (or killed) stays running
                if added or status != tracker.client.get_run(tracker.parent).info.status:  # once: plots, front
                    tracker.finish(status)
            except Exception as error:
                raise SearchError(
                    f"MLflow at {tracker.uri} failed: {first_line(error)}; run this again once it works: it logs only "
                    "what MLflow lacks"
                ) from None
            out.print(
                f"{run_id}: {added} new child run(s) in {tracker.uri} (experiment {EXPERIMENT})",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip
    return 0
