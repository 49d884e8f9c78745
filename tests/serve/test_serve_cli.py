"""`pad serve` from the command line: it starts, answers, logs a line per request, and on Ctrl-C lets the
live request finish before it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
from test_serve import wait_for

from pad.serve.server import free_port


def test_pad_serve_answers_logs_and_drains_on_ctrl_c(tiny_llama, tiny_lora):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "pad.cli", "serve", "--llm", str(tiny_llama), "--rm", str(tiny_lora),
                             "--port", str(port), "--name", "tiny", "--drain-seconds", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def up():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx.get(f"{url}/health").json()["status"] == "ok"
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "pad serve to start", tries=600, pause=0.1)
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                "principles": ["concise=1"]}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).json()["usage"]["completion_tokens"] == 5
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                          json={**body, "max_tokens": 300, "stream": True}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGINT)  # Ctrl-C with a request live: it runs to its end
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    logged = [line for line in err.splitlines() if "principles=concise=1" in line]
    assert len(logged) == 2 and "tokens=5 " in logged[0] and "seconds=" in logged[0], err
