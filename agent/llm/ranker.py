"""The LM-Searcher ranker: an LLM behind any OpenAI-compatible endpoint picks the candidate.

Specs: ``llm`` (``--base-url`` and ``--model``: vLLM, a hosted model, any server),
``openai:MODEL`` (OpenAI itself; key from ``OPENAI_API_KEY``), ``local:PATH``
(a managed ``transformers serve`` of a local folder; ``local`` alone serves the
shipped LM-Searcher-tiny), ``vllm:PATH`` (the same with a managed vLLM server;
``vllm`` alone serves the shipped model) and ``inprocess:PATH`` (the model scored in this
process, with expected grades; ``inprocess`` alone scores the shipped model). Keys are read
from the environment and kept in memory only: never logged, stored or checkpointed.

For k > 1 the model is asked k times without replacement: each pick is removed
from the pool before the next question, so one prompt format serves every k.
An answer naming no candidate triggers a re-ask with a fresh pool (at most
``max_reasks`` times); then a random candidate of the pool is taken and the
decision is marked ``fallback``. Decisions that keep falling back mean a
misconfigured ranker (a prompt format the model was not trained on, say): the
run stops with :class:`RankerMisconfigured` rather than go on as a random search.

In the one-question-per-candidate formats (``near``, ``grade``) a server that returns
logprobs (vLLM, OpenAI) gives each candidate its expected grade, the mean of the
model's digit distribution, instead of the greedy digit; ``transformers serve``
returns none, and the greedy digit decides. ``inprocess`` reads the distribution off the
model directly (agent/llm/in_process.py).

Timeouts, 408, 429 and 5xx are retried with exponential backoff; when they persist
the ranker raises :class:`RankerUnavailable`, the run stops with everything saved,
and ``--resume`` continues once the server is back. Other 4xx answers (a prompt
longer than the server's context, a wrong model name or key) would repeat on
resume: they raise :class:`RankerMisconfigured`, naming the fix.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from agent.config import LOCAL_FOLDER_PREFIXES
from agent.llm.local_server import LocalServer, ManagedServer, ServerError
from agent.llm.vllm_server import VllmServer
from agent.strategies.rankers import Decision, Ranker, RankerStopped, RankRequest
from prompts import choice as choice_format
from prompts import grade as grade_format
from prompts.card import DEFAULT_LOCAL_MODEL, MODEL_CARD, model_card
from prompts.render import DEFAULT_HISTORY_CAP, FORMATS, PER_CANDIDATE, RANKS_TAGGED, TAGGED, render, render_each
from tools.ncode import SearchSpace

if TYPE_CHECKING:
    from agent.llm.in_process import InProcessClient

OPENAI_BASE_URL = "https://api.openai.com/v1"


class RankerUnavailable(RankerStopped):
    """The ranker's server cannot be reached; the run stops and can be resumed."""


class RankerSetupError(ValueError):
    """The ranker cannot start (bad flags, missing key, server down); nothing was run."""


class RankerMisconfigured(RankerSetupError):
    """The ranker started but cannot work as configured: the server refuses its requests (a 4xx other than
    408 and 429), or its answers keep falling back to random picks. Resuming would repeat it, so the run
    stops as bad input (exit 2), its evaluations saved, and the message names the flags to fix."""


@dataclass
class LLMOptions:
    base_url: str | None = None
    model: str | None = None
    temperature: float = 0.0
    max_tokens: int = 64
    timeout_s: float = 60.0
    prompt_format: str = "compact"
    history_cap: int = DEFAULT_HISTORY_CAP
    slot_weighting: float = 0.0  # the near format's distances: 0 counts slots alike (prompts.near.slot_weights)
    max_reasks: int = 3
    retries: int = 4  # transient-error retries per request
    parallel_requests: int = 10  # per-candidate questions in flight at once (1: one after another)
    backoff_s: float = 1.0
    fallback_limit: int = 5  # stop after this many fallback decisions in a row (0: never)
    fallback_share: float = 0.5  # stop when more than this share of decisions fell back, after 10 (0: never)


@dataclass
class Completion:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    transient_errors: int
    expected_grade: float | None = None  # from the server's logprobs, when asked for and returned


_TOKEN = re.compile(r"[0-9A-Za-z]+")
TOP_LOGPROBS = 10  # alternatives per answer token: room for all ten digits
DIGITS = "0123456789"
RETRIED_STATUSES = (408, 429)  # 4xx that mean "later", not "never"
FALLBACK_SHARE_AFTER = 10  # decisions before --fallback-share is judged: a few early misses are no pattern
GUESS_WARNED: set[str] = set()  # ranker specs already warned about a guessed prompt format (once per process)


def _digit(token: str) -> int | None:
    """The digit a token is, spaces aside; None for anything else (``12``, ``7.``)."""
    token = token.strip()
    return int(token) if len(token) == 1 and token in DIGITS else None


def expected_grade(logprobs: Any) -> float | None:
    """The mean of the model's digit distribution at the answer's first digit, renormalised over the digits.

    Why: the greedy digit throws away how sure the model was; two candidates it grades 7, one surely and one
    barely over 3, are not alike. None when the server returned no logprobs there, when that token is more
    than one digit (parse_grade reads the first), or when no digit is among its alternatives.
    """
    for position in getattr(logprobs, "content", None) or []:
        if not any(ch in DIGITS for ch in position.token):
            continue
        if _digit(position.token) is None:
            return None
        mass = [0.0] * 10
        for top in position.top_logprobs or []:
            if (digit := _digit(top.token)) is not None:
                mass[digit] += math.exp(top.logprob)
        total = sum(mass)
        return sum(digit * p for digit, p in enumerate(mass)) / total if total > 0 else None
    return None


def server_message(error: openai.APIStatusError) -> str:
    """What the server said, on one line: OpenAI and vLLM put it in ``message``, FastAPI in ``detail``."""
    body = error.body if isinstance(error.body, dict) else {}
    said = body.get("message") or body.get("detail") or error.message
    return " ".join(str(said).split())[:300]


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
    """A chat-completion call with bounded, audited retries for transient failures.

    ``role`` names the model in messages (the ranker, or CoLLM-NAS's navigator and generator), so that an
    error says which of them failed and which flags set it.
    """

    def __init__(self, base_url: str, model: str, api_key: str, options: LLMOptions, role: str = "ranker") -> None:
        self.model = model
        self.options = options
        self.role = role
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=options.timeout_s, max_retries=0)
        self.logprobs_refused = False  # the server answered 400 (or 422) to logprobs: not asked again this run

    def flag(self, name: str) -> str:
        """The flag that sets this model's ``name`` (base-url, model)."""
        return f"--{name}" if self.role == "ranker" else f"--{self.role}-{name} (or --{name})"

    def check(self) -> None:
        """Fail before the search if the server is unreachable or refuses us."""
        try:
            self.client.models.list()
        except openai.APIConnectionError as error:
            raise RankerSetupError(
                f"cannot reach the {self.role} at {self.client.base_url} ({error.__cause__ or error}); "
                f"start its server (README: 'LLM rankers') or fix {self.flag('base-url')}"
            ) from None
        except openai.AuthenticationError:
            raise RankerSetupError(
                f"the {self.role} at {self.client.base_url} refused the API key; set LMSEARCHER_API_KEY or "
                "OPENAI_API_KEY"
            ) from None
        except openai.APIStatusError:
            pass  # some servers cannot list models (transformers serve lists only its hub cache); requests will tell

    def complete(self, messages: list[dict[str, str]], grade: bool = False) -> Completion:
        """One answer; with ``grade`` (a one-digit answer), its expected grade too when the server has logprobs."""
        transient = 0
        logprobs = grade and not self.logprobs_refused
        while True:
            started = time.perf_counter()
            extra = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if logprobs else {}
            try:
                response = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=self.options.temperature,
                    max_tokens=self.options.max_tokens,
                    **extra,
                )
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError) as error:
                reason = type(error).__name__
            except openai.APIStatusError as error:
                if logprobs and error.status_code in (400, 422):  # a server without logprobs: ask once more without
                    logprobs, self.logprobs_refused = False, True
                    continue
                if error.status_code < 500 and error.status_code not in RETRIED_STATUSES:
                    raise RankerMisconfigured(self.refusal(error)) from None
                reason = f"HTTP {error.status_code}"
            else:
                usage, choice = response.usage, response.choices[0]
                return Completion(
                    text=choice.message.content or "",
                    prompt_tokens=usage.prompt_tokens if usage else None,
                    completion_tokens=usage.completion_tokens if usage else None,
                    latency_s=time.perf_counter() - started,
                    transient_errors=transient,
                    expected_grade=expected_grade(choice.logprobs) if logprobs else None,
                )
            transient += 1
            if transient > self.options.retries:
                raise RankerUnavailable(
                    f"the {self.role} at {self.client.base_url} failed {transient} times in a row (last: {reason})"
                )
            time.sleep(self.options.backoff_s * 2 ** (transient - 1))

    def refusal(self, error: openai.APIStatusError) -> str:
        """One line for a 4xx: the status, what the server said, the likely fix, and how to go on."""
        status, url = error.status_code, self.client.base_url
        new_run = "evaluations so far are saved; start a new run with the fixed flags (--resume keeps a run's flags)"
        context = (
            "if the prompt is longer than the server's context, lower --history-cap (or serve the model with a "
            "longer context, vLLM's --max-model-len); else drop a setting it refuses (--max-tokens, --temperature); "
            f"{new_run}"
        )
        key = "evaluations so far are saved; set the key in LMSEARCHER_API_KEY or OPENAI_API_KEY, then --resume"
        fixes = {
            400: context,
            413: context,
            422: context,
            401: key,
            403: key,
            404: f"no model {self.model!r} there? pass {self.flag('model')} as the server names it "
            f"(GET {url}models lists them), or fix {self.flag('base-url')} (it usually ends in /v1); {new_run}",
        }
        return (
            f"the {self.role} at {url} refused the request (HTTP {status}: {server_message(error)}); "
            f"{fixes.get(status, new_run)}"
        )


def answer_grade(answer: Completion) -> float | None:
    """A grade-format answer's grade: its expected grade where the server gave logprobs, else its greedy digit
    (None when the text holds no grade)."""
    return answer.expected_grade if answer.expected_grade is not None else grade_format.parse_grade(answer.text)


class LLMRanker(Ranker):
    def __init__(
        self, name: str, client: ChatClient | InProcessClient, options: LLMOptions, server: ManagedServer | None = None
    ) -> None:
        self.name = name
        self.client = client
        self.options = options
        self.server = server
        self.asked = 0  # decisions this process put to the model, for the fallback guard
        self.fallbacks = 0
        self.fallbacks_in_a_row = 0

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
        grades: dict[str, float | None] = {}  # grade format: each candidate is asked about once per decision
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
        self._guard(decision.fallback)
        return decision

    def _guard(self, fallback: bool) -> None:
        """Stop a run whose answers keep falling back: each fallback is a random pick, so such a run is a random
        search that looks like an LLM one. Raised before this decision is recorded; the evaluations are saved."""
        self.asked += 1
        self.fallbacks += fallback
        self.fallbacks_in_a_row = self.fallbacks_in_a_row + 1 if fallback else 0
        limit, share = self.options.fallback_limit, self.options.fallback_share
        if limit and self.fallbacks_in_a_row >= limit:
            seen = f"{self.fallbacks_in_a_row} decisions in a row"
        elif share and self.asked >= FALLBACK_SHARE_AFTER and self.fallbacks > share * self.asked:
            seen = f"{self.fallbacks} of {self.asked} decisions"
        else:
            return
        fmt, cap = self.options.prompt_format, self.options.history_cap
        raise RankerMisconfigured(
            f"the {self.name} ranker gave no usable answer in {seen}, each then picked at random (a random search); "
            f"likely the prompt format ({fmt}, history cap {cap}) is not the one the model was trained on: pass the "
            "served model's card with --model-card MODEL_FOLDER, or --prompt-format and --history-cap; or the "
            "prompts outgrow the server's context (lower --history-cap). Evaluations so far are saved; start a new "
            "run with the fixed flags (--fallback-limit 0 --fallback-share 0 turn this check off)"
        )

    def _pick(
        self,
        request: RankRequest,
        history: list[tuple[str, float]],
        remaining: list[str],
        decision: Decision,
        calls: Calls,
        grades: dict[str, float | None],
    ) -> str | None:
        """One question (or, in the grade format, one per ungraded candidate); the pick, or None."""
        fmt = self.options.prompt_format
        if fmt in PER_CANDIDATE:
            asked = [code for code in remaining if code not in grades]
            for code, answer in zip(asked, self._ask(request, history, asked, decision, calls), strict=True):
                grades[code] = answer_grade(answer)
            graded = {code: grade for code in remaining if (grade := grades[code]) is not None}
            if not graded:
                for code in remaining:  # a re-ask asks again
                    grades.pop(code, None)
                return None
            return grade_format.highest(graded, request.rng)
        (answer,) = self._ask(request, history, remaining, decision, calls)
        if fmt == "choice":
            return choice_format.parse_pick(answer.text, remaining, request.rng)
        return parse_choice(answer.text, remaining)

    def _ask(
        self,
        request: RankRequest,
        history: list[tuple[str, float]],
        codes: list[str],
        decision: Decision,
        calls: Calls,
    ) -> list[Completion]:
        """The answers about ``codes``: one question per code in the ``PER_CANDIDATE`` formats (in the codes'
        order, each answered with a grade), else one question about them all."""
        space, fmt, cap = request.space, self.options.prompt_format, self.options.history_cap
        if fmt in PER_CANDIDATE:
            prompts = render_each(fmt, space.length, request.metric, history, codes, cap, self.options.slot_weighting)
        else:
            prompts = [render(fmt, space.name, space.length, request.metric, history, codes, cap)]
        return self._send(prompts, decision, calls, grade=fmt in PER_CANDIDATE)

    def _send(
        self, prompts: list[list[dict[str, str]]], decision: Decision, calls: Calls, grade: bool
    ) -> list[Completion]:
        """The answers, in order, with up to ``parallel_requests`` questions in flight (a server that batches,
        such as vLLM or the managed ``transformers serve``, answers them together), audited in the decision;
        its latency is wall time, as the requests overlap. An answer graded by logprobs is stored with its
        expected grade, so the audit shows what decided."""
        workers, started = min(self.options.parallel_requests, len(prompts)), time.perf_counter()
        grade_all = getattr(self.client, "grade_all", None)  # the in-process model grades a pool in one pass
        if grade and grade_all is not None:
            completions = grade_all(prompts)
        elif workers <= 1:
            completions = [self.client.complete(messages, grade) for messages in prompts]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                completions = list(pool.map(lambda messages: self.client.complete(messages, grade), prompts))
        decision.latency_s += time.perf_counter() - started
        for completion in completions:
            expected = completion.expected_grade
            note = "" if expected is None else f" (expected grade {expected:.2f} from logprobs)"
            calls.answers.append(completion.text + note)
            calls.transient += completion.transient_errors
            decision.prompt_tokens += completion.prompt_tokens or 0
            decision.completion_tokens += completion.completion_tokens or 0
        return completions


def is_remote(spec: str) -> bool:
    """A ranker reached by URL (``llm``, ``openai:MODEL``) rather than a model folder served here."""
    return spec == "llm" or spec.startswith("openai:")


def remote_endpoint(spec: str, options: LLMOptions) -> tuple[str, str, str]:
    """(base URL, model, API key) of a remote ranker; a missing URL, model or key is a RankerSetupError."""
    if spec == "llm":
        if not options.base_url or not options.model:
            raise RankerSetupError("--ranker llm needs --base-url URL and --model NAME (for example a vLLM server)")
        return options.base_url, options.model, _api_key("LMSEARCHER_API_KEY", "OPENAI_API_KEY") or "EMPTY"
    model = spec.split(":", 1)[1] or "gpt-4o"
    base_url = options.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
    api_key = _api_key("OPENAI_API_KEY")
    if api_key is None:
        raise RankerSetupError(f"--ranker {spec} needs an API key in the environment variable OPENAI_API_KEY")
    return base_url, model, api_key


def check_shipped_model(spec: str) -> None:
    """The shipped model (a bare ``inprocess``/``local``/``vllm``) must be in models/."""
    folder = local_folder(spec)
    if spec in LOCAL_FOLDER_PREFIXES and not folder.is_dir():
        raise RankerSetupError(
            f"no LM-Searcher-tiny at {folder} (it ships in the repository's models/ folder); "
            f"restore it with git, build one with 'python main.py finetune tiny', or pass --ranker {spec}:PATH"
        )


def check_options(options: LLMOptions) -> None:
    """The rules of the ranker's own settings, which need neither a space nor a server."""
    if options.prompt_format not in FORMATS:
        raise RankerSetupError(f"unknown prompt format {options.prompt_format!r}; valid: {', '.join(FORMATS)}")
    if not 0.0 <= options.slot_weighting <= 1.0:
        raise RankerSetupError(
            f"slot_weighting must be in [0, 1] (0: slots count alike), got {options.slot_weighting}; fix the model's "
            f"card ({MODEL_CARD})"
        )
    if options.parallel_requests < 1:
        raise RankerSetupError(
            f"--parallel-requests must be at least 1 (1: one question at a time), got {options.parallel_requests}"
        )
    if options.fallback_limit < 0 or not 0.0 <= options.fallback_share <= 1.0:
        raise RankerSetupError(
            "--fallback-limit must be 0 or more and --fallback-share in [0, 1] (0 turns either off), got "
            f"{options.fallback_limit} and {options.fallback_share}"
        )


def preflight_llm_ranker(spec: str, raw_options: dict[str, Any]) -> None:
    """What can be checked of an LLM ranker in seconds, before a task is built (minutes for a training task):
    its options and model card, its API key, a remote endpoint answering, the shipped model being there.
    :func:`make_llm_ranker` checks it all again when it builds the ranker."""
    options, _ = effective_options(spec, raw_options)
    check_options(options)
    if is_remote(spec):
        ChatClient(*remote_endpoint(spec, options), options).check()
    else:
        check_shipped_model(spec)


def _api_key(*names: str) -> str | None:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


def card_settings(card: str | None, folder: Path | None) -> dict[str, Any]:
    """Prompt settings from ``--model-card`` (a model folder or its lmsearcher.json, which must exist), else from
    a locally served model's own folder (if it has a card). Why a flag: a model reached by URL has no folder
    here, and a model asked in a format it was not trained on answers noise."""
    if card is None:
        return model_card(folder) if folder else {}
    path = Path(card)
    where = path.parent if path.is_file() and path.name == MODEL_CARD else path
    if not (where / MODEL_CARD).is_file():
        raise RankerSetupError(
            f"--model-card {card}: no {MODEL_CARD} there; pass the served model's folder or its {MODEL_CARD}"
        )
    try:
        return model_card(where)
    except (OSError, ValueError) as error:
        raise RankerSetupError(f"--model-card {card}: cannot read {where / MODEL_CARD} ({error})") from None


def local_folder(spec: str) -> Path | None:
    """The model folder of a ``local``, ``vllm`` or ``inprocess`` spec (the shipped model when none is named)."""
    prefix, _, path = spec.partition(":")
    return (Path(path) if path else DEFAULT_LOCAL_MODEL) if prefix in LOCAL_FOLDER_PREFIXES else None


def effective_options(spec: str, raw_options: dict[str, Any]) -> tuple[LLMOptions, bool]:
    """The options a ranker of ``spec`` runs with, without starting it: flags given explicitly win, then the
    model's card, then LLMOptions' defaults; and whether the prompt format is a guess (``llm`` with neither a
    card nor ``--prompt-format``)."""
    folder = local_folder(spec)
    card = card_settings(raw_options.get("model_card"), folder)
    known = {f.name for f in fields(LLMOptions)}
    given = {key: value for key, value in raw_options.items() if value is not None and key in known}
    guessed = spec == "llm" and "prompt_format" not in {**card, **given}
    return LLMOptions(**{**card, **given}), guessed


def make_llm_ranker(
    spec: str,
    raw_options: dict[str, Any],
    space: SearchSpace | None = None,
    pool_size: int = 10,
    generates: bool = False,
) -> LLMRanker:
    """Flags given explicitly win; then the model's card (``--model-card``, else a local model's own); then
    LLMOptions' defaults (see :func:`effective_options`).

    ``space`` and ``pool_size`` are checked against the prompt format (and, when the model is to write
    codes, ``generates``, against its generation prompt) before any server starts.
    """
    local_path = local_folder(spec)
    vllm_python = raw_options.get("vllm_python")  # where vLLM is installed: a server's setting, not the ranker's
    options, guessed = effective_options(spec, raw_options)
    if guessed and spec not in GUESS_WARNED:
        GUESS_WARNED.add(spec)
        print(
            f"warning: --ranker {spec} without --model-card or --prompt-format: the prompt format is a guess "
            f"({options.prompt_format}, history cap {options.history_cap}); pass --model-card MODEL_FOLDER (the "
            "served model's folder or its lmsearcher.json) or --prompt-format",
            file=sys.stderr,
        )
    check_options(options)
    writes_codes = options.prompt_format in (TAGGED if generates else RANKS_TAGGED)
    if writes_codes and space is not None:
        widest = max(len(slot.options) for slot in space.slots)
        problem = choice_format.unsupported(space.length, widest, pool_size if options.prompt_format == "choice" else 1)
        if problem:
            raise RankerSetupError(problem)
    server = None
    if is_remote(spec):
        base_url, model, api_key = remote_endpoint(spec, options)
    else:
        check_shipped_model(spec)
        try:
            if spec.startswith("inprocess"):  # loads torch and transformers: only for the ranker that needs them
                from agent.llm.in_process import InProcessClient

                return LLMRanker(spec, InProcessClient(local_path, options.max_tokens), options)
            if spec.startswith("vllm"):
                server = VllmServer(local_path, python=vllm_python).start()
            else:
                server = LocalServer(local_path).start()
        except ServerError as error:
            raise RankerSetupError(str(error)) from None
        model = server.model_name if isinstance(server, VllmServer) else str(server.model_path)
        base_url, api_key = server.base_url, "EMPTY"
    client = ChatClient(base_url, model, api_key, options)
    if server is None:
        client.check()  # a managed server has already answered its health check
    return LLMRanker(spec, client, options, server)
