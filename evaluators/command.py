"""Any training script, in any language, as an evaluator: a command template run once per NCode.

    python main.py --task command --space S.yaml --metric val_acc \\
        --command "python train.py --depth {depth} --width {width}"

**The command.** ``{slot}`` placeholders take the decoded option of that slot, each shell-quoted
(a value with spaces, quotes or ``$(...)`` arrives as one literal argument); ``{ncode}`` is the
code, ``{workdir}`` the evaluation's own folder, ``{gpu}`` its GPU id, ``{fidelity}`` how long to train
(``--max-fidelity`` while searching, ``--final-fidelity`` in the final stage) and ``{seed}`` the seed
(``--seed``; each final repeat its own). A format spec applies to
the value before quoting (``{lr:.0e}``); literal braces are written ``{{`` and ``}}``. Any other
placeholder is an error before the search starts. The command runs with ``/bin/sh -c`` in its
own, freshly emptied folder ``<--workdir>/<ncode>/`` (default ``runs/command-work/<space
name>/<ncode>/``), which keeps its full output in ``stdout.log`` and ``stderr.log``; its
environment is this process's plus ``LMSEARCHER_NCODE`` (and ``CUDA_VISIBLE_DEVICES``, below).

**The score** is read from the command's standard output; a line counts if it is either

- ``<metric>: NUMBER`` or ``<metric>=NUMBER`` (anywhere in the line, metric name case-sensitive
  and not part of a longer name, spaces allowed around ``:``/``=``; NUMBER is any float such as
  ``0.93``, ``-1``, ``2.5e-3``, ``nan`` or ``inf``; a line with several takes its last), or
- a JSON object holding the metric as a number, e.g. ``{"val_acc": 0.93, "params_m": 1.2}``;
  the object's other numeric keys are recorded with the evaluation.

The last line that counts gives the score. A NaN or infinite score, a command that exits with a
non-zero status, exceeds ``--eval-timeout`` seconds, or prints no such line is a failed
evaluation (the search goes on); its error and metrics keep the end of its output.

**Intermediate scores.** A line that counts and also names its step is read *while the command
runs* and reported to the search: ``epoch 3 val_acc: 0.71``, ``step=200 val_acc=0.71`` (the words
``epoch`` or ``step``, any case, then ``:``, ``=`` or a space, then a whole number), or a JSON line
with an ``"epoch"`` or ``"step"`` number, ``{"epoch": 3, "val_acc": 0.71}``. Steps must grow (a
repeated step is ignored). When the run's scheduler (``--scheduler asha``) stops the evaluation,
the command gets SIGTERM, then SIGKILL 10 s later if it is still running (``command_runner.GRACE_S``);
it is recorded as ``stopped`` with its last reported value and step.

**GPUs.** With ``--gpus 0,1`` each worker takes one: worker ``i`` (``--workers``, numbered 0 to
N-1; the search process itself is 0) uses ``gpus[i % len(gpus)]`` as ``{gpu}`` and
``CUDA_VISIBLE_DEVICES``. Without ``--gpus`` a set ``CUDA_VISIBLE_DEVICES`` is passed through and
is ``{gpu}``: on a Ray cluster leave ``--gpus`` out and give ``--worker-gpus 1``, so that Ray's
own assignment is used (``--gpus`` ids would override it, though the task then asks Ray for one
GPU per worker).

**No orphans.** The command runs under a small supervisor (:mod:`evaluators.command_runner`) in its
own process group; a timeout, Ctrl-C, or the search (or its worker) being killed, even with
SIGKILL, kills the whole group within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evaluators.command_runner import GRACE_S
from evaluators.objective import load_space
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome, unreported
from tools.ncode import SearchSpace, decode
from tools.reporting import Reporter

BUILTINS = ("ncode", "workdir", "gpu", "fidelity", "seed")
WORKER_INDEX_ENV = "LMSEARCHER_WORKER_INDEX"  # set by agent/workers/parallel.py in each worker
RUNNER = Path(__file__).with_name("command_runner.py")
TAIL_CHARS = 2000  # of stdout and stderr kept with a failed evaluation
ERROR_TAIL_CHARS = 500  # of those quoted in its error message
NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"
_FORMATTER = string.Formatter()
STEP_KEYS = ("epoch", "step")
STEP = re.compile(r"(?<![\w.])(?i:epoch|step)\s*[:= ]\s*(\d+)(?![\w.])")
FOLLOW_S = 0.1  # how often a running command's new output lines are read


def parse_score(lines: Iterable[str], metric: str) -> tuple[float, dict[str, Any]] | None:
    """The score and extra metrics of the last line that counts (see the module docstring), or None."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(metric)}\s*[:=]\s*({NUMBER})(?![\w.])")
    found = None
    for line in lines:
        from_json = _json_score(line.strip(), metric)
        if from_json is not None:
            found = from_json
        elif matches := pattern.findall(line):
            found = (float(matches[-1]), {})
    return found


def parse_report(line: str, metric: str) -> tuple[float, float] | None:
    """(step, value) of a score line that names its step (see the module docstring), or None."""
    text = line.strip()
    from_json = _json_score(text, metric)
    if from_json is not None:
        step = next((from_json[1][key] for key in STEP_KEYS if key in from_json[1]), None)
        return None if step is None else (float(step), from_json[0])
    found = parse_score([line], metric)
    step_match = STEP.search(line)
    if found is None or step_match is None:
        return None
    return float(step_match.group(1)), found[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_score(text: str, metric: str) -> tuple[float, dict[str, Any]] | None:
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict) or not _is_number(record.get(metric)):
        return None
    extra = {key: value for key, value in record.items() if _is_number(value) and math.isfinite(value)}
    extra.pop(metric, None)
    if isinstance(record.get("feasible"), bool):  # the command says a result is infeasible itself
        extra["feasible"] = record["feasible"]
    return float(record[metric]), extra


def _whole(number: float | None) -> float | int | None:
    """27.0 as 27: a fidelity is usually a count of epochs or steps, which scripts parse as integers."""
    return int(number) if number is not None and float(number).is_integer() else number


def _tail(path: Path, chars: int = TAIL_CHARS) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 4 * chars))  # 4 bytes per character at most in UTF-8
        return handle.read().decode(errors="replace")[-chars:]


def _stop(runner: subprocess.Popen[bytes]) -> None:
    """SIGTERM makes the runner stop the command's group (SIGTERM, SIGKILL after its grace period);
    SIGKILL only if the runner itself hangs."""
    if runner.poll() is not None:
        return
    runner.terminate()
    try:
        runner.wait(timeout=GRACE_S + 5)
    except subprocess.TimeoutExpired:
        runner.kill()
        runner.wait()


class CommandEvaluator(Evaluator):
    fidelity_option = "fidelity"  # what the final stage sets to train again (agent/final.py)

    def __init__(
        self,
        space: str | Mapping[str, Any] | SearchSpace | None,
        command: str | None,
        metric: str | None,
        maximize: bool = True,
        timeout_s: float | None = None,
        workdir: str | None = None,
        gpus: list[str] | None = None,
        fidelity: float | None = None,
        seed: int = 0,
        also_read: list[str] | None = None,
    ) -> None:
        self.also_read = also_read or []  # other objectives' and constrained metrics' names, read like the score
        if not space or not command or not metric:
            raise EvaluatorSetupError(
                "--task command needs --space SPACE.yaml, --command 'TEMPLATE' (e.g. \"python train.py --depth "
                '{depth}") and --metric NAME (the score the command prints)'
            )
        self.space = load_space(space, "command")
        if timeout_s is not None and timeout_s <= 0:
            raise EvaluatorSetupError(f"--eval-timeout must be a positive number of seconds, got {timeout_s}")
        clashes = [slot.name for slot in self.space.slots if slot.name in BUILTINS]
        if clashes:
            raise EvaluatorSetupError(
                f"space {self.space.name!r}: slot name(s) {clashes} clash with placeholders {BUILTINS}"
            )
        self.metric = Metric(metric, maximize, f"{metric} printed by the command")
        self.template, self.timeout_s, self.fidelity, self.seed = command, timeout_s, fidelity, seed
        self.root = Path(workdir or Path("runs", "command-work", self.space.name)).absolute()
        self.gpu = self._gpu(gpus)
        self.resources = {"num_cpus": 1, "num_gpus": 1} if gpus else {"num_cpus": 1}
        self._parsed = self._parse_template()

    @staticmethod
    def _gpu(gpus: list[str] | None) -> str | None:
        """This worker's GPU: its share of ``gpus``, else the one Ray (or the user) made visible."""
        if gpus is not None:
            if not gpus or not all(gpu.strip() for gpu in gpus):
                raise EvaluatorSetupError(f"--gpus needs comma-separated device ids such as 0,1; got {gpus}")
            index = os.environ.get(WORKER_INDEX_ENV, "0")
            if not index.isdigit():
                raise EvaluatorSetupError(f"${WORKER_INDEX_ENV} must be a worker number, got {index!r}")
            return gpus[int(index) % len(gpus)].strip()
        return os.environ.get("CUDA_VISIBLE_DEVICES") or None

    def _parse_template(self) -> list[tuple[str, str | None, str, str | None]]:
        """The template's parts; every placeholder checked against every value it can take."""
        try:
            parsed = [
                (literal, field, spec or "", conv) for literal, field, spec, conv in _FORMATTER.parse(self.template)
            ]
        except ValueError as error:
            raise EvaluatorSetupError(f"--command: {error} (write literal braces as {{{{ and }}}})") from None
        slots = {slot.name: slot.options for slot in self.space.slots}
        samples: dict[str, tuple[Any, ...]] = {
            **slots,
            "ncode": ("0",),
            "workdir": (str(self.root),),
            "gpu": (self.gpu,),
            "fidelity": (_whole(self.fidelity),),
            "seed": (self.seed,),
        }
        valid = ", ".join(f"{{{name}}}" for name in [*slots, *BUILTINS])
        for _, field, spec, conversion in parsed:
            if field is None:
                continue
            if field not in samples:
                raise EvaluatorSetupError(
                    f"--command has an unknown placeholder {{{field}}}; valid placeholders: {valid} "
                    "(write literal braces as {{ and }})"
                )
            if field == "fidelity" and self.fidelity is None:
                raise EvaluatorSetupError(
                    "--command uses {fidelity} but no fidelity is known: give --max-fidelity (e.g. the epochs to train)"
                )
            if field == "gpu" and self.gpu is None:
                raise EvaluatorSetupError(
                    "--command uses {gpu} but no GPU is known: declare --gpus (e.g. --gpus 0,1) "
                    "or set CUDA_VISIBLE_DEVICES"
                )
            for value in samples[field]:
                try:
                    _FORMATTER.format_field(_FORMATTER.convert_field(value, conversion), spec)
                except (ValueError, TypeError) as error:
                    raise EvaluatorSetupError(f"--command: {{{field}}} cannot format {value!r}: {error}") from None
        return parsed

    def render(self, ncode: str, workdir: Path) -> str:
        """The shell command for one code: every substituted value shell-quoted."""
        values = {
            **decode(self.space, ncode), "ncode": ncode, "workdir": str(workdir), "gpu": self.gpu,
            "fidelity": _whole(self.fidelity), "seed": self.seed,
        }  # fmt: skip
        parts = []
        for literal, field, spec, conversion in self._parsed:
            parts.append(literal)
            if field is not None:
                text = _FORMATTER.format_field(_FORMATTER.convert_field(values[field], conversion), spec)
                parts.append(shlex.quote(text))
        return "".join(parts)

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        workdir = self.root / ncode
        if workdir.exists():  # left by an interrupted attempt: start clean
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        env = {**os.environ, "LMSEARCHER_NCODE": ncode}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        stdout, stderr = workdir / "stdout.log", workdir / "stderr.log"
        runner = [sys.executable, "-I", str(RUNNER), str(os.getpid())]
        search = multiprocessing.parent_process()  # in a worker process: the search that started it
        if search is not None:
            runner += ["--watch-fd", str(search.sentinel)]
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [*runner, "--", self.render(ncode, workdir)],
                cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                pass_fds=() if search is None else (search.sentinel,),
            )  # fmt: skip
        code: int | None = None
        try:
            code = self._follow(process, stdout, reporter)
        finally:
            _stop(process)  # stopped, timed out, or an exception such as Ctrl-C in this process
        if reporter.stopped:
            return Outcome(None, {"workdir": str(workdir)}, status="failed", error="stopped by the scheduler")
        if code == 0:
            found = self._read(stdout, self.metric.name)
            if found is not None:
                others = {name: self._read(stdout, name) for name in self.also_read}
                more = {name: other[0] for name, other in others.items() if other is not None}
                return Outcome(found[0], {**found[1], **more, "workdir": str(workdir)})
        tails = {"stdout_tail": _tail(stdout), "stderr_tail": _tail(stderr), "workdir": str(workdir)}
        return Outcome(None, tails, status="failed", error=self._failure(code, tails))

    @staticmethod
    def _read(stdout: Path, name: str) -> tuple[float, dict[str, Any]] | None:
        with stdout.open(errors="replace") as handle:  # streamed: a training log may be large
            return parse_score(handle, name)

    def _follow(self, process: subprocess.Popen[bytes], stdout: Path, reporter: Reporter) -> int | None:
        """Wait for the command, reporting its step lines as they appear; its exit code, or None when it
        timed out or the scheduler stopped it."""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        last_step = -math.inf
        with stdout.open("rb") as handle:
            pending = b""
            while True:
                wait = FOLLOW_S if deadline is None else min(FOLLOW_S, max(0.0, deadline - time.monotonic()))
                try:
                    code: int | None = process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    code = None
                *lines, pending = (pending + handle.read()).split(b"\n")
                for line in lines:
                    found = parse_report(line.decode(errors="replace"), self.metric.name)
                    if found is not None and found[0] > last_step and math.isfinite(found[1]):
                        last_step = found[0]
                        if reporter.report(found[1], found[0]):
                            return None
                if code is not None:
                    return code
                if deadline is not None and time.monotonic() >= deadline:
                    return None

    def _failure(self, code: int | None, tails: dict[str, str]) -> str:
        if code is None:
            return f"timed out after {self.timeout_s:g} s (--eval-timeout); the command's processes were killed"
        if code == 0:
            name = self.metric.name
            return unreported(
                name,
                f"the command printed no score: expected a line '{name}: NUMBER' (or '{name}=NUMBER') or a JSON "
                f"object line with a numeric {json.dumps(name)} key; stdout ends with:\n"
                + tails["stdout_tail"][-ERROR_TAIL_CHARS:],
            )
        if code < 0:
            how = f"the command's supervisor was killed by signal {-code}"
        else:
            how = f"the command exited with code {code}"
            if code > 128:
                with contextlib.suppress(ValueError):  # 128 + N: the shell reports a command killed by signal N
                    how += f" (killed by {signal.Signals(code - 128).name})"
        stderr = tails["stderr_tail"][-ERROR_TAIL_CHARS:]
        return f"{how}; stderr ends with:\n{stderr}" if stderr.strip() else f"{how}; stderr is empty"

    def describe(self) -> str:
        direction = "max" if self.metric.maximize else "min"
        return f"{self.space.name}: {self.metric.name} ({direction}imised) printed by `{self.template.split()[0]} ...`"
