"""The LM-Searcher ranker: an LLM behind any OpenAI-compatible endpoint picks the candidate.

Specs: ``llm`` (``--base-url`` and ``--model``: vLLM, a hosted model, any server),
``openai:MODEL`` (OpenAI itself; key from ``OPENAI_API_KEY``) and ``local:PATH``
(a managed ``transformers serve`` of a local folder; ``local`` alone serves the
shipped LM-Searcher-tiny). Keys are read from the environment and kept in memory
only: never logged, stored or checkpointed.

For k > 1 the model is asked k times without replacement: each pick is removed
from the pool before the next question, so one prompt format serves every k.
An answer naming no candidate triggers a re-ask with a fresh pool (at most
``max_reasks`` times); then a random candidate of the pool is taken and the
decision is marked ``fallback``. Timeouts, 429 and 5xx are retried with
exponential backoff; when they persist the ranker raises
:class:`RankerUnavailable`, the run stops with everything saved, and
``--resume`` continues once the server is back.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from agent.llm.local_server import LocalServer, LocalServerError
from agent.strategies.rankers import Decision, Ranker, RankRequest
from prompts import choice as choice_format
from prompts import grade as grade_format
from prompts.card import DEFAULT_LOCAL_MODEL, model_card
from prompts.render import DEFAULT_HISTORY_CAP, FORMATS, PER_CANDIDATE, RANKS_TAGGED, TAGGED, render, render_each
from tools.ncode import SearchSpace

LLM_RANKER_PREFIXES = ("openai:", "local:", "local")
OPENAI_BASE_URL = "https://api.openai.com/v1"


class RankerUnavailable(RuntimeError):
    """The ranker's server cannot be reached; the run stops and can be resumed."""


class RankerSetupError(ValueError):
    """The ranker cannot start (bad flags, missing key, server down); nothing was run."""


@dataclass
class LLMOptions:
    base_url: str | None = None
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 64
    timeout_s: float = 60.0
    prompt_format: str = "compact"
    history_cap: int = DEFAULT_HISTORY_CAP
    max_reasks: int = 3
    retries: int = 4  # transient-error retries per request
    parallel_requests: int = 10  # per-candidate questions in flight at once (1: one after another)
    backoff_s: float = 1.0


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    transient_errors: int


_TOKEN = re.compile(r"[0-9A-Za-z]+")


def parse_choice(answer: str, pool: list[str]) -> str | None:
    """The one candidate an answer names, tolerating whitespace, quotes and extra words.

    Accepted: the whole answer (stripped of quotes and punctuation) is a candidate,
    or exactly one distinct candidate appears as a separate token. Anything else,
    including an answer naming two candidates, is no answer.
    """
    offered = set(pool)
    stripped = answer.strip().strip("\"'`.;:,!()[]{}<> \n\t")
    if stripped in offered:
        return stripped
    named = {token for token in _TOKEN.findall(answer) if token in offered}
    return named.pop() if len(named) == 1 else None


@dataclass
class Calls:
    """What one decision's requests returned: every answer, and the transient errors retried."""

    answers: list[str] = field(default_factory=list)
    transient: int = 0


class ChatClient:
    """A chat-completion call with bounded, audited retries for transient failures."""

    def __init__(self, base_url: str, model: str, api_key: str, options: LLMOptions) -> None:
        self.model = model
        self.options = options
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=options.timeout_s, max_retries=0)

    def check(self) -> None:
        """Fail before the search if the server is unreachable or refuses us."""
        try:
            self.client.models.list()
        except openai.APIConnectionError as error:
            raise RankerSetupError(
                f"cannot reach the ranker at {self.client.base_url} ({error.__cause__ or error}); "
                "start the server (README: 'Serving a ranker') or fix --base-url"
            ) from None
        except openai.AuthenticationError:
            raise RankerSetupError(f"the ranker at {self.client.base_url} refused the API key; check it") from None
        except openai.APIStatusError:
            pass  # some servers cannot list models (transformers serve lists only its hub cache); requests will tell

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        transient = 0
        while True:
            started = time.perf_counter()
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=self.options.temperature,
                    max_tokens=self.options.max_tokens,
                )
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError) as error:
                reason = type(error).__name__
            except openai.APIStatusError as error:
                if error.status_code < 500:
                    raise RankerUnavailable(f"the ranker rejected the request ({error.status_code}): {error}") from None
                reason = f"HTTP {error.status_code}"
            else:
                usage = response.usage
                return Completion(
                    text=response.choices[0].message.content or "",
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    latency_s=time.perf_counter() - started,
                    transient_errors=transient,
                )
            transient += 1
            if transient > self.options.retries:
                raise RankerUnavailable(
                    f"the ranker at {self.client.base_url} failed {transient} times in a row (last: {reason})"
                )
            time.sleep(self.options.backoff_s * 2 ** (transient - 1))


class LLMRanker(Ranker):
    def __init__(self, name: str, client: ChatClient, options: LLMOptions, server: LocalServer | None = None) -> None:
        self.name = name
        self.client = client
        self.options = options
        self.server = server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def rank(self, request: RankRequest) -> Decision:
        if len(request.pool) <= request.k:  # nothing to choose: do not spend a request
            return Decision(chosen=list(request.pool), pool=list(request.pool))
        history = [(o.ncode, o.score) for o in request.history if o.score is not None]
        pool = list(request.pool)
        if self.options.prompt_format in PER_CANDIDATE and len(history) < 2:
            # Grades are read on the history's own scale; below two scored codes there is none, so any
            # answer would be a guess: pick at random and spend no request (raw_answer stays empty).
            return Decision(chosen=request.rng.sample(pool, request.k), pool=pool)
        decision = Decision(chosen=[], pool=pool, prompt_tokens=0, completion_tokens=0, latency_s=0.0)
        calls = Calls()
        grades: dict[str, int | None] = {}  # grade format: each candidate is asked about once per decision
        while len(decision.chosen) < min(request.k, len(request.pool)):
            remaining = [code for code in pool if code not in decision.chosen]
            choice = None
            for attempt in range(self.options.max_reasks + 1):
                if attempt > 0 and request.repool is not None:
                    fresh = [code for code in request.repool() if code not in decision.chosen]
                    remaining = fresh or remaining
                    decision.retries += 1
                choice = self._pick(request, history, remaining, decision, calls, grades)
                if choice is not None:
                    break
            if choice is None:
                choice = request.rng.choice(remaining)
                decision.fallback = True
            decision.chosen.append(choice)
            pool = remaining
        decision.pool = pool if request.k == 1 else decision.pool
        decision.raw_answer = "\n---\n".join(calls.answers)
        decision.error = f"{calls.transient} transient error(s) retried" if calls.transient else None
        return decision

    def _pick(
        self,
        request: RankRequest,
        history: list[tuple[str, float]],
        remaining: list[str],
        decision: Decision,
        calls: Calls,
        grades: dict[str, int | None],
    ) -> str | None:
        """One question (or, in the grade format, one per ungraded candidate); the pick, or None."""
        fmt = self.options.prompt_format
        if fmt in PER_CANDIDATE:
            asked = [code for code in remaining if code not in grades]
            for code, text in zip(asked, self._ask(request, history, asked, decision, calls), strict=True):
                grades[code] = grade_format.parse_grade(text)
            graded = {code: grade for code in remaining if (grade := grades[code]) is not None}
            if not graded:
                for code in remaining:  # a re-ask asks again
                    grades.pop(code, None)
                return None
            return grade_format.highest(graded, request.rng)
        (text,) = self._ask(request, history, remaining, decision, calls)
        if fmt == "choice":
            return choice_format.parse_pick(text, remaining, request.rng)
        return parse_choice(text, remaining)

    def _ask(
        self,
        request: RankRequest,
        history: list[tuple[str, float]],
        codes: list[str],
        decision: Decision,
        calls: Calls,
    ) -> list[str]:
        """The answers about ``codes``: one question per code in the ``PER_CANDIDATE`` formats (in the codes'
        order), else one question about them all."""
        space, fmt, cap = request.space, self.options.prompt_format, self.options.history_cap
        if fmt in PER_CANDIDATE:
            prompts = render_each(fmt, space.length, request.metric, history, codes, cap)
        else:
            prompts = [render(fmt, space.name, space.length, request.metric, history, codes, cap)]
        return self._send(prompts, decision, calls)

    def _send(self, prompts: list[list[dict[str, str]]], decision: Decision, calls: Calls) -> list[str]:
        """The answers, in order, with up to ``parallel_requests`` questions in flight (a server that batches,
        such as vLLM or the managed ``transformers serve``, answers them together), audited in the decision;
        its latency is wall time, as the requests overlap."""
        workers, started = min(self.options.parallel_requests, len(prompts)), time.perf_counter()
        if workers <= 1:
            completions = [self.client.complete(messages) for messages in prompts]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                completions = list(pool.map(self.client.complete, prompts))
        decision.latency_s += time.perf_counter() - started
        for completion in completions:
            calls.answers.append(completion.text)
            calls.transient += completion.transient_errors
            decision.prompt_tokens += completion.prompt_tokens or 0
            decision.completion_tokens += completion.completion_tokens or 0
        return [completion.text for completion in completions]


def _api_key(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def make_llm_ranker(
    spec: str,
    raw_options: dict[str, Any],
    space: SearchSpace | None = None,
    pool_size: int = 10,
    generates: bool = False,
) -> LLMRanker:
    """Flags given explicitly win; then the local model's own card; then LLMOptions' defaults.

    ``space`` and ``pool_size`` are checked against the prompt format (and, when the model is to write
    codes, ``generates``, against its generation prompt) before any server starts.
    """
    local_path = (
        (Path(spec.split(":", 1)[1]) if ":" in spec else DEFAULT_LOCAL_MODEL) if spec.startswith("local") else None
    )
    given = {key: value for key, value in raw_options.items() if value is not None}
    options = LLMOptions(**{**(model_card(local_path) if local_path else {}), **given})
    if options.prompt_format not in FORMATS:
        raise RankerSetupError(f"unknown prompt format {options.prompt_format!r}; valid: {', '.join(FORMATS)}")
    if options.parallel_requests < 1:
        raise RankerSetupError(
            f"--parallel-requests must be at least 1 (1: one question at a time), got {options.parallel_requests}"
        )
    writes_codes = options.prompt_format in (TAGGED if generates else RANKS_TAGGED)
    if writes_codes and space is not None:
        widest = max(len(slot.options) for slot in space.slots)
        problem = choice_format.unsupported(space.length, widest, pool_size if options.prompt_format == "choice" else 1)
        if problem:
            raise RankerSetupError(problem)
    server = None
    if spec == "llm":
        if not options.base_url or not options.model:
            raise RankerSetupError("--ranker llm needs --base-url URL and --model NAME (for example a vLLM server)")
        base_url, model = options.base_url, options.model
        api_key = _api_key("LMSEARCHER_API_KEY", "OPENAI_API_KEY") or "EMPTY"
    elif spec.startswith("openai:"):
        model = spec.split(":", 1)[1] or "gpt-4o"
        base_url = options.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        api_key = _api_key("OPENAI_API_KEY")
        if api_key is None:
            raise RankerSetupError(f"--ranker {spec} needs an API key in the environment variable OPENAI_API_KEY")
    else:
        if spec == "local" and not local_path.is_dir():
            raise RankerSetupError(
                f"no LM-Searcher-tiny at {local_path} (it ships in the repository's models/ folder); "
                "restore it with git, build one with 'python main.py finetune tiny', or pass --ranker local:PATH"
            )
        try:
            server = LocalServer(local_path).start()
        except LocalServerError as error:
            raise RankerSetupError(str(error)) from None
        base_url, model, api_key = server.base_url, str(server.model_path), "EMPTY"
    client = ChatClient(base_url, model, api_key, options)
    if server is None:
        client.check()  # a managed server has already answered its health check
    return LLMRanker(spec, client, options, server)
