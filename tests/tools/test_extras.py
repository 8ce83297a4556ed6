"""A feature whose extra is not installed says which extra to add, in one line, before any work.

The packages are installed here (the test command installs every extra), so their absence is faked by
hiding them from ``find_spec``; benchmarks/install_size.sh checks the same in a real core-only venv."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.cli.main import main
from evaluators import registry
from tools import extras


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    def hide(*modules: str) -> None:
        real = extras.find_spec
        monkeypatch.setattr(extras, "find_spec", lambda name: None if name in modules else real(name))

    return hide


@pytest.mark.parametrize(
    ("task", "hidden", "named"),
    [("diffusion_lora", ("diffusers",), "diffusers"), ("sam_lora", ("py_sod_metrics", "peft"), "peft, py_sod_metrics"),
     ("hat_mt", ("sacrebleu",), "sacrebleu")],
)  # fmt: skip
def test_a_training_task_without_its_extra_names_the_extra(tmp_path, capsys, monkeypatch, without, task, hidden, named):
    without(*hidden)

    def built(_: object) -> None:
        raise AssertionError("the task was built before its extra was checked")

    monkeypatch.setitem(registry.TASKS, task, built)
    assert main(["--task", task, "--ranker", "random", "--db", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --task {task} needs the 'training' extra ({named} not installed): pip install -e '.[training]' "
        "(from the repository's folder)"
    )


def test_finetune_without_its_extra_names_the_extra_and_still_answers_help(capsys, without):
    without("trl")
    assert main(["finetune", "tiny"]) == 2
    assert "python main.py finetune needs the 'finetune' extra (trl not installed)" in capsys.readouterr().err
    assert main(["finetune", "tiny", "--help"]) == 0


def test_every_extra_named_is_declared_in_pyproject():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert set(extras.EXTRAS) <= set(pyproject["project"]["optional-dependencies"])
