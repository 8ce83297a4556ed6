"""CoLLM-NAS (Li, Lin, Wang 2025) as a second LangGraph graph over the same run store::

    START -> navigate -> generate -> coordinate --(candidates)--> evaluate -> record --(budget left)--> navigate
                                          +--(space exhausted)--> END                +--(budget spent or
                                                                                          target reached)--> END

- **navigate**: the stateful Navigator. One conversation for the whole run, kept in
  the run store (table ``conversations``), not in the graph state: from the task
  description it proposes a search direction in plain language, and after each
  round it reads the round's results and refines the direction.
- **generate**: the stateless Generator. The current direction and the space's
  description in, a batch of candidate NCodes out (parsed leniently).
- **coordinate**: the Coordinator. Keeps valid canonical codes, drops duplicates of
  anything evaluated or already in the batch, rejects codes known to break a
  constraint before evaluation (a table's parameter count: ``Evaluator.known_before``),
  and tops the batch up with random unseen codes, feasible as far as is known, when
  the Generator gives too few (recorded in ``collm_rounds``).
- **evaluate** / **record**: as in every loop (:mod:`agent.loops.common`); the search stops at the
  budget or once ``target`` is reached.

Every LLM call is audited in ``llm_calls`` (tokens, latency, raw answer, error).
Nodes are idempotent like the LM-Searcher loop's: a node re-run after a crash
reuses an answer already stored (a Navigator turn is stored only once answered,
both messages in one transaction), and ``evaluate`` skips codes already
recorded. A Navigator or Generator that stays down raises
:class:`~agent.llm.ranker.RankerUnavailable`; the run stops and resumes later,
continuing the same conversation.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agent.llm.ranker import OPENAI_BASE_URL, ChatClient, LLMOptions, RankerSetupError, RankerUnavailable, _api_key
from agent.loops.common import Histories, Limits, LoopScaffold, Progress, ranked, step_end_nodes
from agent.runs.store import RunStore, pairs_of
from agent.strategies.proposers import ProposalContext, known_feasible, repaired_pool, unseen_random
from prompts.collm import generator_messages, navigator_round, navigator_start, task_description
from tools.evaluator import Evaluator, Outcome
from tools.ncode import SYMBOLS, decode, normalize, validate

NAVIGATOR, GENERATOR = "collm-navigator", "collm-generator"
REJECTIONS_SHOWN = 5  # codes rejected before evaluation that the Navigator's note names, with their reasons
TOP_UP_DRAWS = 1000  # random codes drawn at most to fill a round with ones that keep the constraints
log = logging.getLogger(__name__)


class CollmState(TypedDict):
    run_id: str
    iteration: int  # the round being worked on
    direction: str  # the Navigator's latest direction (its whole conversation is in the store)
    proposals: list[str]  # the Generator's candidates as parsed, not yet validated
    chosen: list[str]  # the Coordinator's batch, evaluated next
    done: bool


def initial_state(run_id: str) -> CollmState:
    return {"run_id": run_id, "iteration": 0, "direction": "", "proposals": [], "chosen": [], "done": False}


@dataclass
class CollmOptions:
    """``--collm-*``, ``--navigator-*``, ``--generator-*``, ``--target`` and ``--constraints``.
    Unset models and URLs fall back to ``--model`` / ``--base-url``."""

    batch: int = 10
    temperature: float = 0.6  # the paper's setting
    max_tokens: int = 1024
    navigator_model: str | None = None
    navigator_base_url: str | None = None
    generator_model: str | None = None
    generator_base_url: str | None = None
    target: float | None = None
    constraints: str | None = None
    best_shown: int = 10  # best codes shown to the Generator
    navigator_rounds: int = 40  # rounds of the conversation sent back (the first is always kept; the store has all)
    evaluated_cap: int = 200  # evaluated codes listed to the Generator as "never again"


@dataclass
class CollmAgents:
    navigator: ChatClient
    generator: ChatClient
    options: CollmOptions

    def close(self) -> None:
        for client in (self.navigator, self.generator):
            client.client.close()


def collm_options(raw: dict[str, Any]) -> CollmOptions:
    known = {f.name for f in fields(CollmOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RankerSetupError(f"unknown CoLLM-NAS option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    options = CollmOptions(**{key: value for key, value in raw.items() if value is not None})
    if options.batch < 1:
        raise RankerSetupError(f"--collm-batch must be at least 1, got {options.batch}")
    return options


def make_collm_agents(raw_options: dict[str, Any], llm_options: dict[str, Any]) -> CollmAgents:
    """Both LLM clients, checked before any run exists (a server that is down fails here)."""
    options = collm_options(raw_options)
    shared = {
        key: llm_options[key] for key in ("timeout_s", "retries", "backoff_s") if llm_options.get(key) is not None
    }
    settings = LLMOptions(temperature=options.temperature, max_tokens=options.max_tokens, **shared)
    api_key = _api_key("LMSEARCHER_API_KEY", "OPENAI_API_KEY") or "EMPTY"
    openai_default = (
        (os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL) if os.environ.get("OPENAI_API_KEY") else None
    )
    clients: dict[str, ChatClient] = {}
    for role in ("navigator", "generator"):
        model = getattr(options, f"{role}_model") or llm_options.get("model")
        base_url = getattr(options, f"{role}_base_url") or llm_options.get("base_url") or openai_default
        if not model or not base_url:
            raise RankerSetupError(
                f"--strategy collm needs a {role} model: --base-url URL and --model NAME (any OpenAI-compatible "
                f"server), or --{role}-base-url and --{role}-model"
            )
        clients[role] = ChatClient(base_url, model, api_key, settings, role=role)  # errors name the role
    checked: set[str] = set()
    for role, client in clients.items():
        if str(client.client.base_url) in checked:
            continue
        try:
            client.check()
        except RankerSetupError as error:
            raise RankerSetupError(f"CoLLM-NAS {role}: {error}") from None
        checked.add(str(client.client.base_url))
    return CollmAgents(clients["navigator"], clients["generator"], options)


# --- the Generator's answers ------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.S)
_TOKEN = re.compile(r"[0-9A-Za-z]+")
_MARKER = re.compile(r"^\s*(?:[-*+•]|\(?\d+[.)]|#\d+)\s+")
_CODE_LINE = re.compile(r"[0-9A-Za-z\s,;|/\-]+")


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's ``<think>...</think>`` part (or everything before a lone ``</think>``)."""
    text = _THINK.sub("", text or "")
    return text.rsplit("</think>", 1)[-1].strip()


def _from_json(text: str, length: int) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        items = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    codes = []
    for item in items:
        if isinstance(item, list) and all(isinstance(i, int) and 0 <= i < len(SYMBOLS) for i in item):
            codes.append("".join(SYMBOLS[i] for i in item))  # [3, 3, 1, 0, 2, 3]
        elif isinstance(item, str | int) and not isinstance(item, bool):
            codes.append(str(item).strip())
    return codes


def parse_candidates(text: str, length: int) -> list[str]:
    """The candidate codes of a Generator answer, in order; lenient about the format.

    Accepted: a JSON list (of codes, or of lists of option indices); lines holding
    one code each, with list markers, labels (``1: ``), quotes or punctuation
    around it, several codes on one line, or one code with its symbols separated
    (``3, 3, 1, 0, 2, 3``). When no line is like that, any token of exactly
    ``length`` symbols with a digit in it counts. Codes returned here may still be
    invalid: validating them is the Coordinator's job.
    """
    text = strip_reasoning(text).replace("```json", "\n").replace("```", "\n")
    from_json = _from_json(text, length)
    if from_json:
        return from_json
    found: list[str] = []
    for line in text.splitlines():
        clean = _MARKER.sub("", line)
        clean = clean.rsplit(":", 1)[-1].strip().strip("\"'`.,;:()[]{}<> \t*")
        tokens = _TOKEN.findall(clean)
        if not tokens or not _CODE_LINE.fullmatch(clean):
            continue
        if len(tokens) == 1 and (len(tokens[0]) == length or any(c.isdigit() for c in tokens[0])):
            found.append(tokens[0])
        elif len(tokens) > 1 and all(len(token) == length for token in tokens):
            found.extend(tokens)
        elif len(tokens) == length and all(len(token) == 1 for token in tokens):
            found.append("".join(tokens))
    if found:
        return found
    return [token for token in _TOKEN.findall(text) if len(token) == length and any(c.isdigit() for c in token)]


# --- the graph ------------------------------------------------------------------------------------


@dataclass
class CollmParts(LoopScaffold):
    """Everything the CoLLM-NAS nodes need besides the state; none of it is checkpointed."""

    store: RunStore
    evaluator: Evaluator
    evaluate: Callable[[str], Outcome]  # the evaluator tool
    agents: CollmAgents
    budget: int
    seed: int = 0
    on_progress: Callable[[Progress], None] | None = None
    target: float | None = None
    limits: Limits = field(default_factory=Limits)


def coordinator_note(round_row: dict[str, Any] | None) -> str:
    if round_row is None:
        return ""
    proposed = len(json.loads(round_row["proposed"]))
    rejected = pairs_of(round_row, "rejected")
    note = f"The Generator proposed {proposed} code(s): {round_row['valid']} new and valid"
    note += f", {round_row['invalid']} invalid, {round_row['duplicates']} already evaluated or repeated."
    if rejected:
        shown = "; ".join(f"{code}: {reason}" for code, reason in rejected[:REJECTIONS_SHOWN])
        more = f"; and {len(rejected) - REJECTIONS_SHOWN} more" if len(rejected) > REJECTIONS_SHOWN else ""
        note += f" {len(rejected)} rejected before evaluation as infeasible ({shown}{more})."
    repaired = pairs_of(round_row, "repaired")
    if repaired:
        shown = ", ".join(f"{source} -> {code}" for source, code in repaired[:REJECTIONS_SHOWN])
        more = f", and {len(repaired) - REJECTIONS_SHOWN} more" if len(repaired) > REJECTIONS_SHOWN else ""
        note += f" {len(repaired)} of them walked inside the constraints, one slot at a time, and evaluated instead "
        note += f"({shown}{more})."
    if round_row["topped_up"]:
        note += f" {round_row['topped_up']} random code(s) filled the round."
    return note


def feasible_random(context: ProposalContext, n: int, exclude: set[str], evaluator: Evaluator) -> list[str]:
    """Up to ``n`` random unseen codes not known to break a constraint: random draws, then, when ``TOP_UP_DRAWS``
    of them hold too few, the rejected draws walked inside (``repaired_pool``); what is still short, the warning
    says (a limit no one-slot walk reaches)."""
    found, rejected = known_feasible(
        lambda avoid, count: unseen_random(context, count, exclude | avoid), n, evaluator.broken_before, TOP_UP_DRAWS
    )
    if len(found) < n and rejected:
        avoid = context.seen | exclude | set(found)
        rejects = [code for code, _ in rejected]
        walked = repaired_pool(rejects, n - len(found), context.space, evaluator.excess_before, avoid, context.rng)
        found += [code for _, code in walked]
    if len(found) < n and len(found) + len(rejected) >= TOP_UP_DRAWS:
        log.warning(
            "CoLLM-NAS: %d random draws found %d code(s) that keep the constraints, of %d wanted; the round is "
            "smaller", len(found) + len(rejected), len(found), n,
        )  # fmt: skip
    return found


def build_collm_graph(parts: CollmParts) -> StateGraph:
    space, metric = parts.evaluator.space, parts.evaluator.metric
    options = parts.agents.options
    task = task_description(space, metric, options.target, options.constraints)
    observations = Histories(parts.store)

    def ask(client: ChatClient, role: str, run_id: str, iteration: int, messages: list[dict[str, str]]) -> str:
        try:
            completion = client.complete(messages)
        except RankerUnavailable as error:
            parts.store.record_llm_call(run_id, iteration, role, client.model, error=str(error))
            raise RankerUnavailable(f"CoLLM-NAS {role.split('-')[-1]}: {error}") from None
        parts.store.record_llm_call(run_id, iteration, role, client.model, completion)
        return completion.text

    def navigate(state: CollmState) -> dict:
        run_id, iteration = state["run_id"], state["iteration"]
        conversation = parts.store.conversation(run_id)
        answered = [m for m in conversation if m["iteration"] == iteration and m["role"] == "assistant"]
        if answered:  # stored before a crash: never ask twice
            return {"direction": answered[-1]["content"]}
        if not conversation:
            new = navigator_start(task, parts.budget, options.batch)
        else:
            history = observations(run_id)
            last = iteration - 1
            rounds = {row["iteration"]: row for row in parts.store.collm_rounds(run_id)}
            results = [(o.ncode, o.score, decode(space, o.ncode)) for o in history if o.iteration == last]
            best = [(o.ncode, o.score) for o in ranked(history, metric)[:5]]
            new = [
                navigator_round(
                    last + 1, metric, results, best, len(history), parts.budget,
                    coordinator_note(rounds.get(last)), options.target,
                )
            ]  # fmt: skip
        turns = sorted({m["iteration"] for m in conversation})
        kept = set(turns[:1] + turns[-options.navigator_rounds :])
        messages = [{"role": m["role"], "content": m["content"]} for m in conversation if m["iteration"] in kept]
        messages += new
        answer = ask(parts.agents.navigator, NAVIGATOR, run_id, iteration, messages)
        direction = strip_reasoning(answer)  # the raw answer, reasoning included, is in llm_calls
        parts.store.add_messages(run_id, iteration, [*new, {"role": "assistant", "content": direction}])
        return {"direction": direction}

    def generate(state: CollmState) -> dict:
        run_id, iteration = state["run_id"], state["iteration"]
        stored = [c for c in parts.store.llm_calls(run_id) if c["iteration"] == iteration and c["role"] == GENERATOR]
        if stored and stored[0]["error"] is None:  # answered before a crash: never ask twice
            return {"proposals": parse_candidates(stored[0]["raw_answer"] or "", space.length)}
        history = observations(run_id)
        messages = generator_messages(
            task, space.length, metric, state["direction"], options.batch,
            [(o.ncode, o.score) for o in ranked(history, metric)[: options.best_shown]],
            [o.ncode for o in history], options.evaluated_cap,
        )  # fmt: skip
        answer = ask(parts.agents.generator, GENERATOR, run_id, iteration, messages)
        return {"proposals": parse_candidates(answer, space.length)}

    def coordinate(state: CollmState) -> dict:
        run_id, iteration = state["run_id"], state["iteration"]
        history = observations(run_id)
        seen = {o.ncode for o in history}
        k = min(options.batch, parts.budget - len(history))
        chosen: list[str] = []
        rejected: list[tuple[str, str]] = []
        invalid = duplicates = 0
        for raw in state["proposals"]:
            if len(chosen) >= k:
                break
            try:
                code = validate(space, normalize(space, raw))
            except Exception:  # anything a model writes must not stop the run: an invalid candidate
                invalid += 1
                continue
            if code in seen or code in chosen or code in {c for c, _ in rejected}:
                duplicates += 1
                continue
            problems = parts.evaluator.broken_before(code)
            if problems:
                rejected.append((code, "; ".join(problems)))
                continue
            chosen.append(code)
        exclude = set(chosen) | {code for code, _ in rejected}
        repaired: list[tuple[str, str]] = []
        if len(chosen) < k and rejected:  # the Generator's intent, walked inside the limits it missed
            rejects = [code for code, _ in rejected]
            repaired = repaired_pool(
                rejects, k - len(chosen), space, parts.evaluator.excess_before, seen | exclude,
                parts.rng(iteration, "repair"),
            )  # fmt: skip
            chosen += [code for _, code in repaired]
        context = ProposalContext(space, metric, history, seen, parts.rng(iteration, "top-up"))
        exclude |= set(chosen)
        top_up = feasible_random(context, k - len(chosen), exclude, parts.evaluator) if len(chosen) < k else []
        chosen += top_up
        parts.store.record_round(
            run_id, iteration, state["proposals"], chosen, invalid, duplicates, len(top_up), rejected, repaired
        )
        return {"chosen": chosen, "done": not chosen}

    evaluate, record = step_end_nodes(parts, observations)

    graph = StateGraph(CollmState)
    graph.add_node("navigate", navigate)
    graph.add_node("generate", generate)
    graph.add_node("coordinate", coordinate)
    graph.add_node("evaluate", evaluate)
    graph.add_node("record", record)
    graph.add_edge(START, "navigate")
    graph.add_edge("navigate", "generate")
    graph.add_edge("generate", "coordinate")
    graph.add_conditional_edges("coordinate", lambda s: END if s["done"] else "evaluate", ["evaluate", END])
    graph.add_edge("evaluate", "record")
    graph.add_conditional_edges("record", lambda s: END if s["done"] else "navigate", ["navigate", END])
    return graph
