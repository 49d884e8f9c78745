"""What stands in front of the routes: the API key, the body limit, /metrics, and a fuzzer over the served
schema. A real server on a loopback port, the real `openai` client and httpx."""

from __future__ import annotations

import collections

import httpx
import openai
import pytest
from test_serve import wait_for

from pad.decode.config import DecodeConfig
from pad.serve import build_service, running_server
from pad.serve.server import exposure_warning, is_loopback

KEY = "sk-pad-test-0123456789"


@pytest.fixture(scope="module")
def keyed(tiny_llama, tiny_lora):
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(tiny_lora), max_new_tokens=4)
    svc = build_service(cfg, max_batch=2, max_queue=2, max_tokens=16, name="tiny", api_key=KEY, max_body=4096)
    with running_server(svc) as url:
        yield url


def chat(url, key, **body):
    c = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    return c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                     **{"max_tokens": 3, **body})


def test_the_api_key_is_required_on_every_route_but_health(keyed):
    url = keyed
    for key in ("wrong", KEY[:-1], KEY + "x"):
        with pytest.raises(openai.AuthenticationError, match="API key") as e:
            chat(url, key)
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
    assert chat(url, KEY).usage.completion_tokens == 3
    streamed = list(chat(url, KEY, stream=True, extra_body={"principles": ["concise=1"]}))
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    for headers in ({}, {"Authorization": KEY}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {KEY}"}):
        r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", headers
    assert httpx.get(f"{url}/health").json()["status"] == "ok"  # load balancers probe without a key
    for path in ("/v1/models", "/metrics", "/openapi.json", "/docs", "/nothing"):
        r = httpx.get(f"{url}{path}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
    assert httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_a_body_over_the_limit_gets_413_and_the_server_goes_on(keyed):
    url = keyed
    with pytest.raises(openai.APIStatusError, match="limit of 4096 bytes") as e:
        chat(url, KEY, extra_body={"principles": ["x" * 5000]})
    assert e.value.status_code == 413

    def chunks():  # no Content-Length: the limit holds on what arrives
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(f"{url}/v1/chat/completions", content=chunks(),
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("the body is larger")
    assert chat(url, KEY).usage.completion_tokens == 3


def test_binding_beyond_loopback_without_a_key_warns():
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.2", "example.org")))
    assert "without an API key" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", KEY) is None and exposure_warning("127.0.0.1", None) is None


@pytest.fixture(scope="module")
def open_server(tiny_llama, tiny_lora):
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(tiny_lora), max_new_tokens=4)
    svc = build_service(cfg, max_batch=4, max_queue=4, max_tokens=6, name="tiny")
    with running_server(svc) as url:
        yield url


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples, whatever their labels."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line[len(name)] in " {")


def test_metrics_count_requests_tokens_and_latencies(open_server):
    url = open_server
    before = httpx.get(f"{url}/metrics").text
    assert chat(url, "any", max_tokens=5).usage.completion_tokens == 5
    list(chat(url, "any", max_tokens=4, stream=True))
    httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": []})  # a 400
    r = httpx.get(f"{url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    after = r.text
    assert metric(after, "pad_generated_tokens_total") - metric(before, "pad_generated_tokens_total") == 9
    ok = 'pad_requests_total{path="/v1/chat/completions",status="200"}'
    bad = 'pad_requests_total{path="/v1/chat/completions",status="400"}'
    assert metric(after, ok) - metric(before, ok) == 2 and metric(after, bad) - metric(before, bad) == 1
    for name in ("pad_time_to_first_token_seconds_count", "pad_time_per_output_token_seconds_count"):
        assert metric(after, name) - metric(before, name) == 2, name
    assert metric(after, "pad_live_rows") == 0 and metric(after, "pad_queue_length") == 0


def test_a_fuzzer_on_the_served_schema_finds_no_5xx(open_server):
    """Schemathesis sends requests made from /openapi.json, valid and broken ones (the valid ones for the
    served model, so that they reach the engine); none may get a 5xx, and a normal request is answered
    afterwards. Bounded by max_examples."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation.modes import GenerationMode

    url = open_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.config.base_url = url
    checks = [schemathesis.checks.not_a_server_error]
    failures, calls = [], collections.Counter()

    def call(case, positive: bool):
        if positive and isinstance(case.body, dict) and "messages" in case.body:
            case.body["model"] = "tiny"
        try:
            calls[case.call_and_validate(checks=checks).status_code] += 1
        except Exception as e:  # collect, so that one report lists them all
            failures.append(f"{case.method} {case.path} {case.body!r:.300}: {e}")

    def fuzz(mode):
        @settings(max_examples=80, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(generation_mode=mode))
        def run(case):
            call(case, mode.is_positive)

        run()

    fuzz(GenerationMode.POSITIVE)
    fuzz(GenerationMode.NEGATIVE)
    assert not failures, "\n".join(failures[:5])
    assert calls[200] and calls[400], calls  # some reached the engine, some were refused
    assert chat(url, "any", max_tokens=3).usage.completion_tokens == 3
    wait_for(lambda: httpx.get(f"{url}/health").json()["live"] == 0, "the fuzzed rows to end")
