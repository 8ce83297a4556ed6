"""Results users already have: a YAML space plus a CSV or JSON table of metrics per architecture.

Rows are keyed by an ``ncode`` column (or a JSON object keyed by NCode), or by one
column per slot holding that slot's option value. The search only proposes codes
that are in the table.

A metric cell may hold a learning curve instead of a number: a list with the value after each
epoch (in CSV, the list written as JSON, ``"[0.41, 0.63, 0.70]"``). The evaluation then reports
the curve epoch by epoch, so that a scheduler (``--scheduler asha``) can stop it early as it
would a real training; its score is the curve's last value, and the longest curve is the task's
``max_fidelity``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import InvalidNCode, SearchSpace, encode, validate
from tools.reporting import Reporter
from tools.spaces import SpaceFileError, load_space_file

log = logging.getLogger(__name__)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV file, a JSON list of objects, or a JSON object keyed by NCode."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as handle:
                return [dict(row) for row in csv.DictReader(handle)]
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise EvaluatorSetupError(f"cannot read results table {path}: {error}") from None
    if isinstance(data, dict):
        return [{"ncode": key, **value} for key, value in data.items() if isinstance(value, dict)]
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    raise EvaluatorSetupError(f"{path}: expected a JSON list of objects or an object keyed by NCode")


def header_of(path: Path) -> list[str]:
    """The column names of a CSV file with no rows (a JSON file without rows has none)."""
    if path.suffix.lower() != ".csv":
        return []
    with path.open(newline="") as handle:
        return sorted(next(csv.reader(handle), []))


def _number(value: Any) -> float | None:
    """A finite number, also from a CSV cell's text; None for text, NaN or infinity (no ranker can use them)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def curve_of(value: Any) -> list[float] | None:
    """A learning curve cell (a list of numbers, or one written as JSON in a CSV cell), or None."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if not isinstance(value, list) or not value:
        return None
    numbers = [_number(item) for item in value]
    return None if any(number is None for number in numbers) else numbers  # type: ignore[return-value]


def _coerce(value: Any, options: tuple[Any, ...]) -> Any:
    """CSV cells are strings: match them to an option of the slot by text."""
    by_text = {str(option): option for option in options}
    return by_text.get(str(value), value)


class TableEvaluator(Evaluator):
    resources: ClassVar[dict[str, Any]] = {"num_cpus": 0.5}  # a table lookup

    def __init__(
        self, space_path: str | None, data: str | None, metric: str | None, maximize: bool = True,
        known_before: list[str] | None = None,
    ) -> None:  # fmt: skip
        if not space_path or not data or not metric:
            raise EvaluatorSetupError(
                "--task table needs --space SPACE.yaml, --data RESULTS.csv|json and --metric NAME"
            )
        try:
            space = load_space_file(space_path)
        except SpaceFileError as error:
            raise EvaluatorSetupError(str(error)) from None
        path = Path(data)
        if not path.is_file():
            raise EvaluatorSetupError(f"results table {path} does not exist; pass a CSV or JSON file with --data")
        self.rows: dict[str, dict[str, Any]] = {}
        rows = read_rows(path)
        unscored = 0
        for number, row in enumerate(rows, start=1):
            code = self._code_of(space, row, f"{path} row {number}")
            if _number(row.get(metric)) is None and curve_of(row.get(metric)) is None:
                unscored += 1  # an architecture without this metric cannot be searched
                continue
            if code in self.rows:
                raise EvaluatorSetupError(
                    f"{path} row {number}: NCode {code} appears twice; keep one row per architecture "
                    "(average repeated runs first)"
                )
            self.rows[code] = row
        if not self.rows:
            columns = sorted(rows[0]) if rows else header_of(path)
            raise EvaluatorSetupError(f"{path}: no row has a numeric {metric!r}; columns are {columns}")
        if unscored:
            log.warning(
                "%s: %d of %d rows have no finite number under %r (text, NaN or infinity) and are left out of the "
                "search", path, unscored, len(rows), metric,
            )  # fmt: skip
        self.space = SearchSpace(space.name, space.slots, space.rule, space.description, members=frozenset(self.rows))
        self.metric = Metric(metric, maximize, f"{metric} from {path.name}")
        self.curves = {code: curve for code, row in self.rows.items() if (curve := curve_of(row[metric])) is not None}
        self.max_fidelity = float(max(map(len, self.curves.values()))) if self.curves else None
        self.known_columns = self._known_columns(path, known_before or [])

    @staticmethod
    def _code_of(space: SearchSpace, row: dict[str, Any], where: str) -> str:
        try:
            if "ncode" in row:
                return validate(space, str(row["ncode"]))
            missing = [slot.name for slot in space.slots if slot.name not in row]
            if missing:
                raise EvaluatorSetupError(f"{where}: no 'ncode' column and no column for slot(s) {missing[:5]}")
            return validate(space, encode(space, {s.name: _coerce(row[s.name], s.options) for s in space.slots}))
        except InvalidNCode as error:
            raise EvaluatorSetupError(f"{where}: {error}") from None

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        """A curve is served epoch by epoch, as a training would report it; a number at once."""
        curve = self.curves.get(ncode)
        if curve is None:
            return Outcome(score=_number(self.rows[ncode][self.metric.name]))
        for epoch, value in enumerate(curve, start=1):
            if reporter.report(value, epoch):
                break
        return Outcome(score=curve[-1], fidelity=float(len(curve)))

    def _known_columns(self, path: Path, names: list[str]) -> tuple[str, ...]:
        """``--known-before`` columns, checked: each must hold numbers, and none can be the searched metric."""
        for name in names:
            if name == self.metric.name:
                raise EvaluatorSetupError(
                    f"--known-before {name}: that is the metric the search optimises, which is known only by "
                    "evaluating; name columns the architecture alone determines, such as params or flops"
                )
            if not any(_number(row.get(name)) is not None for row in self.rows.values()):
                columns = sorted({key for row in self.rows.values() for key in row})
                raise EvaluatorSetupError(
                    f"--known-before {name}: no row of {path} has a number under {name!r}; columns are {columns}"
                )
        return tuple(names)

    def metric_names(self) -> frozenset[str]:
        """The table's columns (a row may lack some), but the slots'."""
        columns = {key for row in self.rows.values() for key in row}
        return frozenset(columns - {"ncode", *(slot.name for slot in self.space.slots)} | {self.metric.name})

    def known_before(self, ncode: str) -> dict[str, float]:
        row = self.rows.get(ncode, {})
        found = {name: _number(row.get(name)) for name in self.known_columns}
        return {name: value for name, value in found.items() if value is not None}

    def final_metrics(self, ncode: str) -> dict[str, Any]:
        row = self.rows[ncode]
        hidden = {"ncode", self.metric.name, *(slot.name for slot in self.space.slots)}
        return {key: value for key, value in row.items() if key not in hidden}
