"""A scripted OpenAI-compatible HTTP server for fault tests.

A real HTTP server on the loopback interface; only the model's words are
scripted, because no model small enough to run here can be made to time out,
fail with 503 or ramble on demand (nor follow CoLLM-NAS's instructions).
Token counts are estimates: prompt characters / 4; answers count 3 tokens for
ranker prompts and characters / 4 otherwise. A script may give the answer's first
token's alternatives with their probabilities; they are returned as logprobs (as
vLLM does) when the request asks for them. Tests of the real model path use
``transformers serve`` instead (see tests/agent/llm/test_ranker.py).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prompts.choice import untag

# A reply: (HTTP status, answer text, seconds to wait before replying), optionally followed by the answer's
# first token's alternatives as {token: probability}, returned as logprobs when the request asks for them.
Script = Callable[[dict, list[str]], tuple[int, str, float] | tuple[int, str, float, dict[str, float]]]


def logprobs(text: str, alternatives: dict[str, float], top: int) -> dict:
    """The OpenAI chat ``logprobs`` of an answer that is one token, with its ``top`` likeliest alternatives."""
    ranked = sorted(alternatives.items(), key=lambda item: -item[1])[:top]
    tops = [{"token": token, "logprob": math.log(p), "bytes": None} for token, p in ranked]
    first = {"token": text, "logprob": math.log(alternatives.get(text, 1.0)), "bytes": None, "top_logprobs": tops}
    return {"content": [first], "refusal": None}


def candidates_of(request: dict) -> list[str]:
    """The candidate codes of a ranker prompt in any format (none for other prompts)."""
    text = request["messages"][-1]["content"]
    if " Code: " in text:  # grade: one candidate per prompt
        return [untag(text.split(" Code: ")[1].split()[0])]
    if "code=label:" in text:  # choice
        return [untag(code) for code in re.findall(r"([^;:,=\s]+)=[A-Z];", text)]
    if "Candidates:" in text:  # compact
        return re.findall(r"([0-9A-Za-z]+);", text.split("Candidates:")[1])
    if "Candidate:\n" in text:  # paper
        return text.split("Candidate:\n")[1].split()
    return []


# A CoLLM-NAS reply: (HTTP status, answer text, seconds to wait) from the request alone.
RoleScript = Callable[[dict], tuple[int, str, float]]


def collm_script(navigator: RoleScript, generator: RoleScript) -> Script:
    """One server for both CoLLM-NAS models, told apart by their system prompts."""
    from prompts.collm import GENERATOR_MARK, NAVIGATOR_MARK

    def script(request: dict, candidates: list[str]) -> tuple[int, str, float]:
        system = request["messages"][0]["content"]
        if system.startswith(NAVIGATOR_MARK):
            return navigator(request)
        if system.startswith(GENERATOR_MARK):
            return generator(request)
        return 400, "neither the Navigator nor the Generator asked", 0.0

    return script


class FakeOpenAI:
    def __init__(self, script: Script, port: int = 0) -> None:
        self.script = script
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(request)
                fake.headers.append({key.lower(): value for key, value in self.headers.items()})
                candidates = candidates_of(request)
                status, text, delay, *alternatives = fake.script(request, candidates)
                time.sleep(delay)
                if status != 200:
                    self._send(status, {"error": {"message": text, "type": "server_error"}})
                    return
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if alternatives and request.get("logprobs"):
                    choice["logprobs"] = logprobs(text, alternatives[0], request.get("top_logprobs") or 0)
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": request["model"],
                        "choices": [choice],
                        "usage": {
                            "prompt_tokens": sum(len(m["content"]) for m in request["messages"]) // 4,
                            "completion_tokens": 3 if candidates else max(1, len(text) // 4),
                            "total_tokens": 0,
                        },
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
