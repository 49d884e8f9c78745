"""`pad serve` from the command line: it starts, answers, logs a line per request, and on Ctrl-C lets the
live request finish before it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from test_serve import wait_for

from pad.serve.server import free_port


def test_pad_serve_answers_logs_and_drains_on_ctrl_c(tiny_llama, tiny_lora):
    proc, url = start(tiny_llama, "--rm", str(tiny_lora), "--drain-seconds", "20")
    try:
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


def start(model, *args) -> tuple[subprocess.Popen, str]:
    """`pad serve` in a child process, answering on a loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "pad.cli", "serve", "--llm", str(model), "--port", str(port),
                             "--name", "tiny", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def up():
        assert proc.poll() is None, proc.stderr.read()
        try:
            return httpx.get(f"{url}/health").json()["status"] == "ok"
        except httpx.TransportError:
            return False

    wait_for(up, "pad serve to start", tries=600, pause=0.1)
    return proc, url


@pytest.fixture
def child():
    procs = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_drains_and_exits_0_with_its_summary(tiny_llama, tiny_lora, child):
    """Fault 4: what docker, systemd and Kubernetes send ends `pad serve` as Ctrl-C does."""
    proc, url = start(tiny_llama, "--rm", str(tiny_lora), "--drain-seconds", "20")
    child.append(proc)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 300, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60, json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        proc.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
    assert proc.wait(timeout=60) == 0
    assert "stopped after 1 requests" in proc.stderr.read()


def test_a_drain_that_runs_out_ends_every_client_well_formed(long_model, child):
    """Fault 3: with --drain-seconds 1 and answers of thousands of tokens live, the plain request gets a JSON
    503 and the stream a final chunk with a finish reason and [DONE]; no tracebacks, exit 0."""
    proc, url = start(long_model, "--drain-seconds", "1", "--max-tokens", "8000", "--max-batch", "2")
    child.append(proc)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8000}
    plain = {}

    def ask_plain():
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        plain.update(status=r.status_code, type=r.headers["content-type"], body=r.json())

    thread = threading.Thread(target=ask_plain)
    thread.start()
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=120, json={**body, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        wait_for(lambda: httpx.get(f"{url}/health").json()["live"] == 2, "both rows to decode")
        proc.send_signal(signal.SIGINT)
        rest = [line for line in lines if line]
    thread.join(120)
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "abort"
    assert plain["status"] == 503 and plain["type"] == "application/json", plain
    assert "drain-seconds" in plain["body"]["error"]["message"]
    assert proc.wait(timeout=60) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "CancelledError" not in err, err
