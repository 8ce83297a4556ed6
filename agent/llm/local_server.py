"""A managed ``transformers serve`` process: a local, offline OpenAI-compatible endpoint.

Started on a free loopback port in its own process group, polled until it
answers, and stopped (group and all) on exit, Ctrl-C and errors alike.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 180.0


class LocalServerError(RuntimeError):
    """The local model cannot be served; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def transformers_cli() -> list[str]:
    """The ``transformers`` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("transformers")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("transformers")
    if found is None:
        raise LocalServerError("the 'transformers' command is missing; pip install 'transformers[serving]'")
    return [found]


def check_model_dir(path: Path) -> None:
    if not path.is_dir():
        raise LocalServerError(f"model folder {path} does not exist; pass local:PATH to a Hugging Face model folder")
    missing = [name for name in ("config.json", "tokenizer_config.json") if not (path / name).is_file()]
    if missing:
        raise LocalServerError(f"{path} is not a Hugging Face model folder (missing {', '.join(missing)})")


def cpu_cache_pages(path: Path) -> int:
    """The continuous-batching cache on a CPU, in pages of 256 tokens: ten questions of up to 800 tokens
    at once, or one as long as the model reads. (Left to itself it sizes the cache from the machine's RAM:
    40 s of allocation and gigabytes at the first request.)"""
    positions = json.loads((path / "config.json").read_text()).get("max_position_embeddings") or 0
    return max(32, -(-positions // 256))


class LocalServer:
    """``with LocalServer(path) as server: server.base_url``; nothing outlives the block."""

    def __init__(self, model_path: str | Path, port: int = 0, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.model_path = Path(model_path).expanduser().resolve()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.port = port  # 0: a free loopback port
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalServer:
        check_model_dir(self.model_path)
        self.port = self.port or free_port()
        # One thread by default: on a busy 2-core machine more threads made decisions ~10x slower.
        env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env["TOKENIZERS_PARALLELISM"] = "false"
        command = [*transformers_cli(), "serve", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--continuous-batching", "--log-level", "warning"]  # a decision's questions answered together
        if not _has_cuda():
            pages = cpu_cache_pages(self.model_path)
            command += ["--device", "cpu", "--cb-num-blocks", str(pages), "--cb-max-batch-tokens", "2048"]
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only calls prctl: safe between fork and exec
        )
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServerError(f"transformers serve exited with code {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise LocalServerError(
            f"transformers serve did not answer within {self.startup_timeout_s:.0f} s:\n{self.log()}"
        )

    def log(self, tail: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read()[-tail:]

    def stop(self) -> None:
        """Terminate the whole process group, then kill whatever of it lingers."""
        if self.process is None or self.process.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                continue
        self.process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the server when the search process dies, even by SIGKILL or SIGTERM,
    where neither ``stop`` nor ``atexit`` get to run. Elsewhere this does nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
