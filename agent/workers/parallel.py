"""Evaluations in parallel: worker processes on this machine, or Ray actors on a cluster.

A worker builds its evaluator once (evaluators may load heavy models) and then
evaluates one NCode at a time through :func:`tools.evaluator_tool.run_evaluation`,
so failures of the evaluation itself come back as failed outcomes. Workers never
touch the run store: they return outcomes, and the driver records them.

Backends:

- ``local``: one process per worker on this machine (``forkserver`` start method
  where available: no inherited threads, CUDA-safe), each with a pipe to the driver.
  A worker watches its parent and exits when the driver is gone.
- ``ray``: one Ray actor per worker, asking for the resources its evaluator
  declares (``Evaluator.resources``, e.g. ``{"num_cpus": 1, "num_gpus": 1}``).
  Ray is imported only here, and only for this backend (``pip install .[distributed]``).

A worker that dies during an evaluation (killed process, lost node) is replaced and
the evaluation is retried, at most ``retries`` times; then it is returned as a
failed outcome naming the error, and the search goes on.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from evaluators.references import reference_of
from evaluators.registry import TaskOptions
from tools.evaluator import Outcome
from tools.io_checks import tcp_unreachable
from tools.processes import exit_with_parent
from tools.reporting import Decide, asking_over

BACKENDS = ("local", "ray")
# Each worker's slot number, 0 to workers-1, set in the worker before it builds its evaluator (a
# replacement takes the dead worker's number): how an evaluator picks its share of a machine (GPUs).
WORKER_INDEX_ENV = "LMSEARCHER_WORKER_INDEX"
REPORT_POLL_S = 0.05  # how often a Ray driver answers its workers' intermediate reports while it waits
RAY_CONNECT_TIMEOUT_S = 10.0  # a Ray address that opens no TCP connection in this long is refused
log = logging.getLogger(__name__)


class ParallelSetupError(RuntimeError):
    """The workers cannot start (Ray missing, cluster unreachable); the message says what to do."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its own evaluator: everything here is picklable."""

    task: str
    options: TaskOptions
    simulated_cost_s: float = 0.0


@dataclass
class Job:
    ncode: str
    attempts: int = 0  # starts so far
    lost: list[str] = field(default_factory=list)  # why earlier attempts' workers died


# -- the worker side ---------------------------------------------------------------------------


class WorkerCore:
    """Builds the evaluator once; evaluates codes. Used inside a worker process or Ray actor."""

    def __init__(self, spec: WorkerSpec, index: int) -> None:
        from evaluators.registry import make_evaluator

        os.environ[WORKER_INDEX_ENV] = str(index)
        self.spec = spec
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.evaluator = None
        self.setup_error: str | None = None
        try:
            self.evaluator = make_evaluator(spec.task, spec.options)
        except Exception as error:  # reported with every evaluation instead of killing the worker
            self.setup_error = f"worker on {self.host} could not build the evaluator: {type(error).__name__}: {error}"

    def evaluate(self, ncode: str, decide: Decide | None = None) -> Outcome:
        from tools.evaluator_tool import run_evaluation

        if self.evaluator is None:
            outcome = Outcome(None, status="failed", error=self.setup_error)
        else:
            outcome = run_evaluation(self.evaluator, ncode, self.spec.simulated_cost_s, decide)
        # Which process did it: audit trail, and how tests find a worker to kill.
        outcome.metrics = {**outcome.metrics, "worker_pid": self.pid, "worker_host": self.host}
        return outcome


def _local_worker_main(connection: Any, spec: WorkerSpec, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's; it stops the workers itself
    exit_with_parent()
    core = WorkerCore(spec, index)
    connection.send(("ready", core.pid))
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        # each report a round trip to the driver (LocalBackend._receive answers from the run's scheduler)
        connection.send(("done", core.evaluate(message, asking_over(connection))))


class _RayWorker:
    """The Ray actor: a :class:`WorkerCore` in a Ray worker process (wrapped with ``ray.remote`` lazily). Its
    intermediate reports go to the driver through the run's :class:`_RayReportDesk` actor."""

    def __init__(self, spec: WorkerSpec, index: int, desk: Any) -> None:
        self.core, self.index, self.desk = WorkerCore(spec, index), index, desk

    def evaluate(self, ncode: str) -> Outcome:
        import ray

        def decide(step: float, value: float) -> bool:
            return bool(ray.get(self.desk.ask.remote(self.index, step, value)))

        return self.core.evaluate(ncode, decide)

    def pid(self) -> int:
        return self.core.pid


class _RayReportDesk:
    """An asyncio Ray actor between the workers and the driver: a worker's ``ask`` waits until the driver, which
    polls ``questions`` while it waits for results, gives the ``answer`` (stop or go on).

    Each question is numbered and handed to the driver once. The driver's answer is sent without waiting, so it
    may land after the next poll: a question still listed then would be answered twice, and the late answer
    would take the slot's next question (whose report the driver would never see)."""

    def __init__(self) -> None:
        self.waiting: dict[int, Any] = {}  # question number -> the asking worker's future
        self.unread: list[tuple[int, int, float, float]] = []  # (question, slot, step, value) not yet handed out
        self.asked = 0

    async def ask(self, slot: int, step: float, value: float) -> bool:
        import asyncio

        future = asyncio.get_running_loop().create_future()
        self.asked += 1
        self.waiting[self.asked] = future
        self.unread.append((self.asked, slot, step, value))
        return await future

    async def questions(self) -> list[tuple[int, int, float, float]]:
        handed, self.unread = self.unread, []
        return handed

    async def answer(self, question: int, stop: bool) -> None:
        future = self.waiting.pop(question)
        if not future.done():
            future.set_result(stop)


# -- the driver side ---------------------------------------------------------------------------


@dataclass
class Lost:
    """A worker died while it held a job."""

    error: str


class Backend(ABC):
    """``slots`` workers; each runs at most one evaluation at a time."""

    name: str

    def __init__(self, spec: WorkerSpec, slots: int) -> None:
        self.spec, self.slots = spec, slots
        # (slot, step, value) -> stop?: the intermediate reports of the evaluation a slot runs
        self.on_report: Callable[[int, float, float], bool] = lambda slot, step, value: False

    @abstractmethod
    def start(self, slot: int, ncode: str) -> None:
        """Begin evaluating ``ncode`` on the worker of ``slot`` (starting the worker if needed)."""

    @abstractmethod
    def wait(self, busy: list[int], timeout: float | None) -> list[tuple[int, Outcome | Lost]]:
        """Results of busy slots: at least one unless ``timeout`` runs out."""

    @abstractmethod
    def replace(self, slot: int) -> None:
        """Drop the (dead) worker of ``slot``; the next ``start`` makes a new one."""

    @abstractmethod
    def close(self, busy: set[int]) -> None:
        """Stop every worker; those in ``busy`` are mid-evaluation and are not waited for."""


def _start_method(spec: WorkerSpec) -> str:
    """``forkserver`` (no inherited threads, CUDA-safe) unless the objective is a Python function other
    processes cannot import (a closure, a function of the user's ``__main__`` script): forked workers
    inherit it, and the user's script is never imported again."""
    objective = spec.options.objective
    if callable(objective) and reference_of(objective) is None:
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ParallelSetupError(
                "workers need an importable objective on this platform: pass it as 'module:function'"
            )
        return "fork"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class LocalBackend(Backend):
    name = "local"

    def __init__(self, spec: WorkerSpec, slots: int) -> None:
        super().__init__(spec, slots)
        self.context = multiprocessing.get_context(_start_method(spec))
        if self.context.get_start_method() == "forkserver":
            # Imported once by the fork server, not once per worker (a replaced worker starts at once).
            self.context.set_forkserver_preload(["agent.workers.parallel", "tools.evaluator_tool"])
        self.workers: dict[int, tuple[Any, Any]] = {}  # slot -> (process, connection)

    def _worker(self, slot: int) -> tuple[Any, Any]:
        if slot not in self.workers:
            ours, theirs = self.context.Pipe()
            process = self.context.Process(
                target=_local_worker_main, args=(theirs, self.spec, slot), name=f"lmsearcher-worker-{slot}"
            )
            process.start()
            theirs.close()
            self.workers[slot] = (process, ours)
        return self.workers[slot]

    def start(self, slot: int, ncode: str) -> None:
        _, connection = self._worker(slot)
        with contextlib.suppress(OSError):  # a dead worker: wait() sees its sentinel and reports it lost
            connection.send(ncode)

    def pids(self) -> dict[int, int]:
        return {slot: process.pid for slot, (process, _) in self.workers.items()}

    def wait(self, busy: list[int], timeout: float | None) -> list[tuple[int, Outcome | Lost]]:
        from multiprocessing.connection import wait

        results: list[tuple[int, Outcome | Lost]] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        while not results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            handles = {}
            for slot in busy:
                process, connection = self.workers[slot]
                handles[connection] = handles[process.sentinel] = slot
            ready = wait(list(handles), left)
            for slot in dict.fromkeys(handles[handle] for handle in ready):
                result = self._receive(slot)
                if result is not None:
                    results.append((slot, result))
            if not ready and left is not None and left <= 0:
                break
        return results

    def _receive(self, slot: int) -> Outcome | Lost | None:
        process, connection = self.workers[slot]
        try:
            while connection.poll():
                kind, value = connection.recv()
                if kind == "done":
                    return value
                if kind == "report":
                    connection.send(self.on_report(slot, *value))
            # Only a sentinel fired: the process ended (or a 'ready' message came alone).
        except (EOFError, OSError, ConnectionError):
            pass
        if process.is_alive():
            return None
        process.join(timeout=1)
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        return Lost(f"worker process {process.pid} {how}")

    def replace(self, slot: int) -> None:
        process, connection = self.workers.pop(slot)
        connection.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=5)

    def close(self, busy: set[int]) -> None:
        for slot, (process, connection) in self.workers.items():
            if slot in busy:  # mid-evaluation: nobody is waiting for its result any more
                process.kill()
            else:
                with contextlib.suppress(OSError):
                    connection.send(None)
            connection.close()
        deadline = time.monotonic() + 5
        for process, _ in self.workers.values():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        self.workers.clear()


def check_ray_address(address: str | None, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse a Ray address (HOST:PORT or ray://HOST:PORT) that opens no TCP connection within ``timeout_s``:
    Ray itself would wait for its GCS for minutes. Other forms ("auto", "local", none) are Ray's to judge."""
    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    reason = tcp_unreachable(host.strip("[]"), int(port), timeout_s)
    if reason:
        raise ParallelSetupError(
            f"nothing answers at Ray address {address!r} ({reason}); start a cluster with 'ray start --head' and "
            "pass the address it prints with --ray-address, or leave --ray-address out for a local Ray"
        )


class RayBackend(Backend):
    name = "ray"

    def __init__(self, spec: WorkerSpec, slots: int, address: str | None, resources: dict[str, Any]) -> None:
        super().__init__(spec, slots)
        try:
            import ray
        except ImportError:
            raise ParallelSetupError("--backend ray needs Ray: pip install '.[distributed]'") from None
        self.ray = ray
        self.started_ray = False
        if not ray.is_initialized():
            self._connect(address)
        self.actor_class = ray.remote(_RayWorker)
        self.desk = ray.remote(_RayReportDesk).options(num_cpus=0).remote()
        self.options = {**resources, "max_restarts": 0, "max_task_retries": 0}
        self.actors: dict[int, Any] = {}
        self.refs: dict[int, Any] = {}  # slot -> object ref of the evaluation it runs
        self.where: dict[int, str] = {}  # slot -> "pid P on HOST" of its actor, once it has answered

    def _connect(self, address: str | None) -> None:
        ray = self.ray
        quiet = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
        check_ray_address(address)
        try:
            if address in (None, "", "auto"):
                # $RAY_ADDRESS, else a cluster started on this machine with `ray start --head`, else a new local Ray
                ray.init(**quiet)
            else:
                ray.init(address=address, **quiet)  # "local": a new local Ray in any case
        except Exception as error:
            raise ParallelSetupError(
                f"cannot connect to Ray at {address!r} ({type(error).__name__}: {error}); start a cluster with "
                "'ray start --head' and pass its address with --ray-address, or leave --ray-address out"
            ) from None
        self.started_ray = True

    def _lost_errors(self) -> tuple[type[BaseException], ...]:
        exceptions = self.ray.exceptions
        names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError")
        return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))

    def start(self, slot: int, ncode: str) -> None:
        if slot not in self.actors:
            self.actors[slot] = self.actor_class.options(**self.options).remote(self.spec, slot, self.desk)
        self.refs[slot] = self.actors[slot].evaluate.remote(ncode)

    def actor(self, slot: int) -> Any:
        return self.actors.get(slot)

    def wait(self, busy: list[int], timeout: float | None) -> list[tuple[int, Outcome | Lost]]:
        by_ref = {self.refs[slot]: slot for slot in busy}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:  # answering the workers' reports every REPORT_POLL_S until a result comes
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            tick = REPORT_POLL_S if left is None else min(REPORT_POLL_S, left)
            ready, rest = self.ray.wait(list(by_ref), num_returns=1, timeout=tick)
            for question, slot, step, value in self.ray.get(self.desk.questions.remote()):
                self.desk.answer.remote(question, self.on_report(slot, step, value))
            if ready or (left is not None and left <= tick):
                break
        if ready and rest:
            more, _ = self.ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        results: list[tuple[int, Outcome | Lost]] = []
        for ref in ready:
            slot = by_ref[ref]
            del self.refs[slot]
            try:
                outcome = self.ray.get(ref)
                self.where[slot] = f"pid {outcome.metrics.get('worker_pid')} on {outcome.metrics.get('worker_host')}"
                results.append((slot, outcome))
            except self._lost_errors() as error:
                where = f" ({self.where[slot]})" if slot in self.where else ""
                results.append((slot, Lost(f"Ray worker{where} lost: {type(error).__name__}: {_first_line(error)}")))
            except self.ray.exceptions.RayError as error:  # e.g. the outcome could not be sent back
                outcome = Outcome(None, status="failed", error=f"{type(error).__name__}: {_first_line(error)}")
                results.append((slot, outcome))
        return results

    def replace(self, slot: int) -> None:
        actor = self.actors.pop(slot, None)
        self.refs.pop(slot, None)
        self.where.pop(slot, None)
        if actor is not None:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(actor, no_restart=True)

    def close(self, busy: set[int]) -> None:
        for slot in list(self.actors):
            self.replace(slot)
        if self.started_ray:
            self.ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


class EvaluationPool:
    """Up to ``backend.slots`` evaluations at once, a FIFO queue for the rest, bounded retries."""

    def __init__(self, backend: Backend, retries: int = 2) -> None:
        self.backend, self.retries = backend, retries
        self.queue: deque[Job] = deque()
        self.busy: dict[int, Job] = {}
        self.worker_losses = 0
        self.on_report: Callable[[str, float, float], bool] | None = None  # (ncode, step, value) -> stop?
        backend.on_report = self._report

    def _report(self, slot: int, step: float, value: float) -> bool:
        return self.on_report is not None and self.on_report(self.busy[slot].ncode, step, value)

    @property
    def slots(self) -> int:
        return self.backend.slots

    @property
    def running(self) -> int:
        return len(self.busy)

    @property
    def queued(self) -> int:
        return len(self.queue)

    def in_flight(self) -> set[str]:
        return {job.ncode for job in self.busy.values()} | {job.ncode for job in self.queue}

    def free(self) -> int:
        return max(0, self.slots - len(self.busy) - len(self.queue))

    def submit(self, ncode: str) -> None:
        self.queue.append(Job(ncode))
        self._fill()

    def _fill(self) -> None:
        for slot in range(self.slots):
            if not self.queue:
                return
            if slot not in self.busy:
                job = self.queue.popleft()
                job.attempts += 1
                self.busy[slot] = job
                self.backend.start(slot, job.ncode)

    def wait(self, timeout: float | None = None) -> list[tuple[str, Outcome]]:
        """Finished evaluations (at least one, unless ``timeout`` runs out or nothing is in flight)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished: list[tuple[str, Outcome]] = []
        while self.busy and not finished:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            for slot, result in self.backend.wait(sorted(self.busy), left):
                job = self.busy.pop(slot)
                if isinstance(result, Lost):
                    finished += self._lost(slot, job, result)
                else:
                    if job.attempts > 1:
                        result.metrics = {**result.metrics, "attempts": job.attempts, "lost_workers": job.lost}
                    finished.append((job.ncode, result))
            self._fill()
            if left is not None and left <= 0:
                break
        return finished

    def _lost(self, slot: int, job: Job, lost: Lost) -> list[tuple[str, Outcome]]:
        self.worker_losses += 1
        self.backend.replace(slot)
        job.lost.append(lost.error)
        if job.attempts <= self.retries:
            log.warning("%s during %s; retrying (attempt %d)", lost.error, job.ncode, job.attempts + 1)
            self.queue.appendleft(job)
            return []
        error = f"{lost.error}; gave up after {job.attempts} attempts (--eval-retries {self.retries})"
        return [(job.ncode, Outcome(None, {"attempts": job.attempts, "lost_workers": job.lost}, 0.0, "failed", error))]

    def evaluate_all(self, ncodes: list[str]) -> Iterator[tuple[str, Outcome]]:
        """Evaluate a batch in parallel; yields (code, outcome) as each finishes."""
        for ncode in ncodes:
            self.submit(ncode)
        wanted = set(ncodes)
        while wanted:
            for ncode, outcome in self.wait():
                wanted.discard(ncode)
                yield ncode, outcome

    def close(self) -> None:
        busy = set(self.busy)
        self.queue.clear()
        self.busy.clear()
        self.backend.close(busy)


def make_pool(
    backend: str,
    workers: int,
    spec: WorkerSpec,
    retries: int = 2,
    ray_address: str | None = None,
    resources: dict[str, Any] | None = None,
) -> EvaluationPool:
    if backend == "local":
        return EvaluationPool(LocalBackend(spec, workers), retries)
    if backend == "ray":
        return EvaluationPool(RayBackend(spec, workers, ray_address, resources or {"num_cpus": 1}), retries)
    raise ParallelSetupError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
