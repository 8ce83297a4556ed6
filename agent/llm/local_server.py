"""A managed ``transformers serve`` process: a local, offline OpenAI-compatible endpoint.

Started on a free loopback port in its own process group, polled until it
answers, and stopped (group and all) on exit, Ctrl-C and errors alike.
:class:`ManagedServer` holds that lifecycle; :class:`LocalServer` and
:class:`agent.llm.vllm_server.VllmServer` only say which command to run.
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


class ServerError(RuntimeError):
    """A managed server cannot serve the model; the message says why and what to do."""


class LocalServerError(ServerError):
    """The local model cannot be served by ``transformers serve``."""


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


def check_model_dir(path: Path, prefix: str = "local", error: type[ServerError] = LocalServerError) -> None:
    if not path.is_dir():
        raise error(f"model folder {path} does not exist; pass {prefix}:PATH to a Hugging Face model folder")
    missing = [name for name in ("config.json", "tokenizer_config.json") if not (path / name).is_file()]
    if missing:
        raise error(f"{path} is not a Hugging Face model folder (missing {', '.join(missing)})")


def cpu_cache_pages(path: Path) -> int:
    """The continuous-batching cache on a CPU, in pages of 256 tokens: ten questions of up to 800 tokens
    at once, or one as long as the model reads. (Left to itself it sizes the cache from the machine's RAM:
    40 s of allocation and gigabytes at the first request.)"""
    positions = json.loads((path / "config.json").read_text()).get("max_position_embeddings") or 0
    return max(32, -(-positions // 256))


class ManagedServer:
    """A model server in its own process group on a free loopback port: ``with Server(path) as server:
    server.base_url``; nothing outlives the block. Subclasses say which command serves the model."""

    label = "the server"  # in messages
    prefix = "local"  # the ranker spec a bad folder is named with
    error: type[ServerError] = ServerError

    def __init__(self, model_path: str | Path, port: int = 0, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.model_path = Path(model_path).expanduser().resolve()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.stopped = False
        self.port = port  # 0: a free loopback port
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line, serving ``model_path`` on 127.0.0.1:``port``."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The server's environment: offline, whatever the user's says."""
        return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def start(self) -> ManagedServer:
        check_model_dir(self.model_path, self.prefix, self.error)
        self.port = self.port or free_port()
        command, env = self.command(), self.environment()
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
                log = self.log()
                self.stop()
                raise self.error(f"{self.label} exited with code {self.process.returncode}:\n{log}{self.advice(log)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        self.stop()
        raise self.error(f"{self.label} did not answer within {self.startup_timeout_s:.0f} s:\n{self.log()}")

    def advice(self, log: str) -> str:
        """What to do about a start that failed with this log ('' when there is nothing to add)."""
        return ""

    def log(self, tail: int = 2000) -> str:
        self._log.seek(0)
        return self._log.read()[-tail:]

    def stop(self) -> None:
        """Terminate the whole process group, wait for all of it (vLLM's engine outlives its API server for a
        moment), then kill whatever of it lingers."""
        if self.process is None or self.stopped:
            return
        group = self.process.pid  # also when the server itself has exited: what it started may still run
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None and not _group_alive(group):
                break
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(group)):
                time.sleep(0.05)
        self.process.wait()
        self.stopped = True  # the group's id may be reused later: never signal it again

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LocalServer(ManagedServer):
    """``transformers serve`` of a local folder."""

    label = "transformers serve"
    error = LocalServerError

    def command(self) -> list[str]:
        command = [*transformers_cli(), "serve", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--continuous-batching", "--log-level", "warning"]  # a decision's questions answered together
        if not _has_cuda():
            pages = cpu_cache_pages(self.model_path)
            command += ["--device", "cpu", "--cb-num-blocks", str(pages), "--cb-max-batch-tokens", "2048"]
        return command

    def environment(self) -> dict[str, str]:
        # One thread by default: on a busy 2-core machine more threads made decisions ~10x slower.
        return {"OMP_NUM_THREADS": "1", **super().environment(), "TOKENIZERS_PARALLELISM": "false"}


def _group_alive(group: int) -> bool:
    """Whether a process of the group still runs; zombies, which only wait to be reaped, do not count."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():  # not Linux: any member at all
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _parent, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if int(pgrp) == group and state != "Z":
            return True
    return False


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
