"""The graph state: small on purpose. The history lives in the run store, not here."""

from __future__ import annotations

from typing import TypedDict


class SearchState(TypedDict):
    run_id: str
    iteration: int  # index of the step being worked on; each step evaluates up to k codes
    pool: list[str]  # candidates proposed for this step
    chosen: list[str]  # the ranker's picks, evaluated next
    done: bool
