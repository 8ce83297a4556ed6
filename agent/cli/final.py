"""``python main.py final RUN_ID --top K [--fidelity F] [--seeds S]``: the final stage of a finished search.

The same stage as ``--final-top`` at the end of a search (agent/final.py): the best K finished
configurations trained again at fidelity F with S seeds each; the pick is the best mean. Run the same
command again after an interruption and it trains only what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.common import DEFAULT_DB, EXIT_INTERRUPTED, UsageError, console, stdout_console
from agent.cli.runs import final_table, number
from agent.driver import Search
from agent.final import FinalPlan, run_final
from tools.evaluator import Outcome


def run_final_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python main.py final",
        description="train a finished search's best configurations again at full length, several seeds each",
    )
    parser.add_argument("run_id")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--top", type=int, default=3, help="how many of the best finished configurations (default 3)")
    parser.add_argument("--fidelity", type=float, help="how long to train (default: as long as the search did)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    args = parser.parse_args(argv)
    if args.top < 1 or args.seeds < 1 or (args.fidelity is not None and not args.fidelity > 0):
        raise UsageError("--top and --seeds must be at least 1, and --fidelity above 0")
    if not Path(args.db).is_file():
        raise UsageError(f"database {args.db} does not exist; run a search first or pass --db")
    search = Search(args.db)
    try:
        config = search.stored_config(args.run_id)
        run = search.store.get_run(args.run_id)
        if run["status"] != "finished":
            raise UsageError(
                f"run {args.run_id!r} is {run['status']}, not finished; finish it first with: "
                f"python main.py --resume {args.run_id} --db {args.db}"
            )
        plan = FinalPlan(args.top, args.fidelity, args.seeds)

        def progress(ncode: str, seed: int, outcome: Outcome) -> None:
            console.print(f"final: {ncode} seed {seed}: {outcome.status} {number(outcome.score)}", highlight=False)

        try:
            finals = run_final(search.store, args.run_id, config, plan, on_result=progress)
        except KeyboardInterrupt:
            console.print("interrupted; every finished training is saved. Run the same command again to continue")
            return EXIT_INTERRUPTED
    finally:
        search.close()
    stdout_console().print(final_table(finals, run["metric"], args.fidelity))
    return 0
