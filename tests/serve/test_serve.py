"""`pad serve` as its users use it: a real HTTP server on a loopback port, the official `openai` client and
httpx, on the tiny fixtures. Every answer is checked against offline decoding of the same request."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import openai
import pytest

from pad.decode.config import DecodeConfig
from pad.decode.engine import DecodeRequest
from pad.decode.run import Models, decode_run, gather_prompts
from pad.principles import Principle
from pad.serve import build_service, running_server

CATS = "Tell me a joke about cats."
BREAD = "How do I bake bread at home? Please explain every step in detail."


def wait_for(predicate, what: str, tries: int = 200, pause: float = 0.05):
    """Poll until `predicate()` holds; a bounded loop that fails with `what`."""
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module", params=["shared", "separate"])
def server(request, tiny_llama, tiny_lora, tiny_persrm):
    """(base URL, models, config): a server over the tiny base with a LoRA PersRM (one backbone) or a
    second model (two)."""
    rm = tiny_lora if request.param == "shared" else tiny_persrm
    cfg = DecodeConfig(llm=str(tiny_llama), rm=str(rm), max_new_tokens=24)
    models = Models(cfg, need_rm=True)
    assert models.backbone == request.param
    svc = build_service(cfg, max_batch=4, max_queue=8, max_tokens=600, name="tiny", models=models)
    with running_server(svc) as url:
        yield url, models, cfg


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def offline(models, cfg, prompt, principles, **settings) -> dict:
    """What `pad decode --prompt PROMPT -p ...` writes for the same request."""
    run_cfg = replace(cfg, principles=principles, **settings)
    return decode_run(run_cfg, gather_prompts(prompt=[prompt]), models, progress=False).records[0]


def ask(url, prompt, principles=None, **body):
    extra = {k: v for k, v in {"principles": principles, **body}.items() if k in ("principles", "topk", "reference", "mode")}
    std = {k: v for k, v in body.items() if k not in extra}
    return client(url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": prompt}],
                                               extra_body={k: v for k, v in extra.items() if v is not None}, **std)


def health(url) -> dict:
    return httpx.get(f"{url}/health").json()


def test_models_and_health(server):
    url, models, _ = server
    assert [m.id for m in client(url).models.list().data] == ["tiny"]
    h = health(url)
    assert h["status"] == "ok" and h["backbone"] == models.backbone and h["live"] == 0


@pytest.mark.parametrize("principles", [["harmless=1"], ["humor=1.5", "concise=0.5"], []])
def test_answers_equal_pad_decode(server, principles):
    url, models, cfg = server
    want = offline(models, cfg, CATS, principles)
    got = ask(url, CATS, principles, max_tokens=24)
    assert got.choices[0].message.content == want["response"]
    assert got.choices[0].finish_reason == {"eos": "stop", "length": "length"}[want["finish_reason"]]
    assert got.usage.completion_tokens == want["tokens"]
    assert got.model_extra["pad"]["principles"] == want["principles"]


def test_stream_equals_the_answer_and_pad_decode(server):
    url, models, cfg = server
    want = offline(models, cfg, BREAD, ["harmless=1"], topk=5, reference="persrm")
    chunks = list(ask(url, BREAD, ["harmless=1"], topk=5, reference="persrm", max_tokens=24, stream=True,
                      stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want["response"]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not one piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == want["tokens"] == 24


def test_sse_ends_with_done(server):
    url, _, _ = server
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_concurrent_requests_each_get_their_own_guidance(server):
    url, models, cfg = server
    asks = [(CATS, ["harmless=1"], {}), (CATS, ["humor=1.5"], {}), (BREAD, ["concise=1", "expert=0.5"], {"topk": 4}),
            ("hi", [], {}), (BREAD, ["humor=1"], {"reference": "prompted-base"}), (CATS, ["concise=0.5"], {})]
    with ThreadPoolExecutor(len(asks)) as pool:
        futures = [pool.submit(ask, url, p, ps, max_tokens=24, **kw) for p, ps, kw in asks]
        got = [f.result().choices[0].message.content for f in futures]
    want = [offline(models, cfg, p, ps, **kw)["response"] for p, ps, kw in asks]
    assert got == want
    assert len(set(got[:2] + got[-1:])) == 3  # the same prompt, three principles: three answers


def test_a_seeded_answer_is_what_pad_decode_seed_writes(server):
    """Fault 8: the server keys a row's random stream as `pad decode --prompt P --seed S` does."""
    url, models, cfg = server
    want = offline(models, cfg, CATS, ["harmless=1"], mode="sample", temperature=1.3, seed=11, max_new_tokens=20)
    a = ask(url, CATS, ["harmless=1"], temperature=1.3, seed=11, max_tokens=20).choices[0].message.content
    b = ask(url, CATS, ["harmless=1"], temperature=1.3, seed=11, max_tokens=20).choices[0].message.content
    other = ask(url, CATS, ["harmless=1"], temperature=1.3, seed=12, max_tokens=20).choices[0].message.content
    assert a == b == want["response"] != other


def test_n_choices_are_n_seeded_runs(server):
    """n rows of one request, each its own random stream: the answers `pad decode --seed 5` writes for
    `--prompt P` given n times; streamed, the same text per choice index."""
    url, models, cfg = server
    run_cfg = replace(cfg, principles=["humor=1"], mode="sample", temperature=1.5, seed=5, max_new_tokens=12)
    records = decode_run(run_cfg, gather_prompts(prompt=[CATS] * 3), models, progress=False).records
    want = [r["response"] for r in records]
    got = ask(url, CATS, ["humor=1"], temperature=1.5, seed=5, max_tokens=12, n=3)
    assert [c.index for c in got.choices] == [0, 1, 2]
    assert [c.message.content for c in got.choices] == want and len(set(want)) == 3
    assert got.usage.completion_tokens == sum(r["tokens"] for r in records)
    chunks = list(ask(url, CATS, ["humor=1"], temperature=1.5, seed=5, max_tokens=12, n=3, stream=True))
    texts = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
             for i in range(3)]
    assert texts == want
    assert sorted(c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason) == [0, 1, 2]


def test_stop_strings_end_the_answer(server):
    url, _, _ = server
    full = ask(url, CATS, ["harmless=1"], max_tokens=24).choices[0].message.content
    stop = full[10:13]
    cut = full[: full.find(stop)]
    got = ask(url, CATS, ["harmless=1"], max_tokens=24, stop=[stop])
    assert got.choices[0].message.content == cut and got.choices[0].finish_reason == "stop"
    streamed = list(ask(url, CATS, ["harmless=1"], max_tokens=24, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == cut
    assert streamed[-1].choices[0].finish_reason == "stop"
    assert wait_for(lambda: health(url)["live"] == 0, "the stopped rows to leave")


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"principles": [{"name": "concise", "weight": "heavy"}]}, "principles[0].weight", "valid number; got 'heavy'"),
    ({"principles": ["concise=abc"]}, "principles[0]", "concise=abc"),
    ({"reference": "nope"}, "reference", "'base', 'persrm' or 'prompted-base'; got 'nope'"),
    ({"topk": 0}, "topk", "topk must be"),
    ({"temperature": -1}, "temperature", "temperature"),
    ({"max_tokens": 601}, "max_tokens", "cap of 600"),
    ({"frobnicate": 1}, "frobnicate", "unknown field"),
    ({"top_p": 0.5}, "top_p", "use topk"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "got 'robot'"),
    ({"messages": [{"role": "user", "content": "long " * 600}]}, "messages", "context is 512 tokens"),
    # fault 1: a field of the wrong JSON type (these gave 500 text/plain)
    ({"mode": {}}, "mode", "got {}"),
    ({"mode": []}, "mode", "got []"),
    ({"messages": [{"role": {}, "content": "x"}]}, "messages[0].role", "got {}"),
    ({"messages": [{"role": [], "content": "x"}]}, "messages[0].role", "got []"),
    ({"principles": [{"name": "concise", "weight": True}]}, "principles[0].weight", "valid number; got True"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].image_url", "unknown field"),
    ({"stop": 5}, "stop", "valid string, or"),
    # fault 5: fields that were accepted and ignored
    ({"top_logprobs": 2}, "top_logprobs", "only allowed with logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream: true"),
    ({"stream": True, "stream_options": []}, "stream_options", "got []"),
    ({"n": True}, "n", "valid integer; got True"),
    ({"logprobs": 0}, "logprobs", "valid boolean; got 0"),
    ({"max_tokens": -1, "max_completion_tokens": 3}, "max_tokens", ">= 1, got -1"),
    ({"max_tokens": "3", "max_completion_tokens": 3}, "max_tokens", "got '3'"),
    ({"user": 123}, "user", "valid string; got 123"),
    ({"metadata": []}, "metadata", "got []"),
    ({"n": 0}, "n", "n must be a whole number from 1 to 4"),
    # fault 7: a temperature that float32 turns to 0, a prompt and max_tokens beyond the context
    ({"temperature": 1e-320}, "temperature", "at least 0.01"),
    ({"messages": [{"role": "user", "content": "long " * 20}], "max_tokens": 500}, "max_tokens",
     "more than the model's context of 512 tokens"),
])
def test_bad_fields_get_400_naming_them_and_the_server_goes_on(server, body, param, says):
    url, _, _ = server
    full = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **body}
    r = httpx.post(f"{url}/v1/chat/completions", json=full)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param and says in err["message"] and "\n" not in err["message"]
    assert ask(url, "hi", max_tokens=3).choices[0].finish_reason in ("stop", "length")


def test_bad_json_and_unknown_model(server):
    url, _, _ = server
    r = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "tiny", "messages": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="'gpt-4' is not served here"):
        client(url).chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="reference"):
        ask(url, "hi", ["concise"], reference="nope")
    assert ask(url, "hi", max_tokens=3).choices[0].message.content is not None


def test_usage_counts_the_persrm_prompts_too(server):
    """Fault 7: usage reports the PersRM's prompts (one per principle, longer than the base's) beside the
    base's, as an extension field."""
    url, models, cfg = server
    got = ask(url, CATS, ["humor=1", "concise=0.5"], max_tokens=4)
    from pad.decode.engine import PADDecoder

    dec = PADDecoder(models.base, models.tok, models.rm, models.rm_tok)
    req = DecodeRequest([{"role": "user", "content": CATS}], [Principle("humor", 1.0), Principle("concise", 0.5)])
    base, rm, _ = dec.texts(req)
    count = lambda text: len(models.tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert got.usage.prompt_tokens == count(base)
    assert got.usage.model_extra["persrm_prompt_tokens"] == sum(map(count, rm)) > 0
    assert ask(url, CATS, [], max_tokens=4).usage.model_extra["persrm_prompt_tokens"] == 0


def test_openapi_declares_the_chat_body_and_errors_have_openais_shape(server):
    """Fault 6: /openapi.json holds the chat request and answer; 404 and 405 in OpenAI's error shape."""
    url, _, _ = server
    spec = httpx.get(f"{url}/openapi.json").json()
    post = spec["paths"]["/v1/chat/completions"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = spec["components"]["schemas"][ref]["properties"]
    assert {"model", "messages", "principles", "topk", "temperature", "stream"} <= set(fields)
    assert "200" in post["responses"] and "400" in post["responses"]
    for r in (httpx.get(f"{url}/v1/nothing"), httpx.get(f"{url}/v1/chat/completions")):
        assert r.status_code in (404, 405) and r.headers["content-type"] == "application/json"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_logprobs_are_the_guided_distributions_and_the_bases(server):
    """logprobs: each token's log-probability under the distribution PAD chose it from (softmax of the guided
    score over the top-k candidates), the likeliest candidates, and the base's (extension fields)."""
    import math

    url, _, _ = server
    got = ask(url, BREAD, ["humor=1.5"], max_tokens=12, temperature=0, topk=5, logprobs=True, top_logprobs=5)
    content = got.choices[0].logprobs.content
    assert len(content) == got.usage.completion_tokens - (got.choices[0].finish_reason == "stop")
    for e in content:  # greedy: the chosen token ranks first
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert abs(sum(math.exp(t.logprob) for t in e.top_logprobs) - 1) < 1e-4  # all 5 candidates
        assert e.model_extra["base_logprob"] <= 0 and len(e.model_extra["base_top_logprobs"]) == 5
    base_first = [e.model_extra["base_top_logprobs"][0]["token"] == e.token for e in content]
    assert not all(base_first)  # the principle changed some choice: not the base's argmax everywhere
    # vanilla: the guided distribution is the base's renormalized over its top k, the same order
    plain = ask(url, BREAD, [], max_tokens=6, temperature=0, topk=5, logprobs=True, top_logprobs=5)
    for e in plain.choices[0].logprobs.content:
        gaps = {round(g.logprob - b["logprob"], 4) for g, b in zip(e.top_logprobs, e.model_extra["base_top_logprobs"])}
        assert len(gaps) == 1 and [g.token for g in e.top_logprobs] == [b["token"] for b in e.model_extra["base_top_logprobs"]]
    # streamed: the same entries, with the chunks that carry their text
    chunks = list(ask(url, BREAD, ["humor=1.5"], max_tokens=12, temperature=0, topk=5, logprobs=True,
                      top_logprobs=5, stream=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]
    assert ask(url, BREAD, ["humor=1.5"], max_tokens=2).choices[0].logprobs is None  # only when asked


def test_sampled_logprobs_are_at_the_rows_temperature(server):
    import math

    url, _, _ = server
    hot = ask(url, CATS, ["harmless=1"], max_tokens=8, temperature=1.7, seed=3, topk=4, logprobs=True,
              top_logprobs=4).choices[0]
    for e in hot.logprobs.content:
        assert e.token in [t.token for t in e.top_logprobs]
        assert abs(sum(math.exp(t.logprob) for t in e.top_logprobs) - 1) < 1e-4
    cold = ask(url, CATS, ["harmless=1"], max_tokens=8, temperature=0.3, seed=3, topk=4, logprobs=True,
               top_logprobs=4).choices[0]
    # a lower temperature sharpens the same kind of distribution: its first candidate is likelier
    assert cold.logprobs.content[0].top_logprobs[0].logprob > hot.logprobs.content[0].top_logprobs[0].logprob


def test_plain_completions_read_the_prompt_without_the_chat_template(server, tiny_llama):
    """/v1/completions: vanilla and greedy, the tokens transformers' own greedy `generate` makes from the bare
    prompt; with principles, guided (another text); streamed, the same text."""
    from transformers import AutoModelForCausalLM

    url, models, _ = server
    prompt = "Once upon a time"
    got = client(url).completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0,
                                         extra_body={"principles": []})
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = models.tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    out = base.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=models.tok.pad_token_id)
    assert got.object == "text_completion"
    assert got.choices[0].text == models.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert got.usage.prompt_tokens == ids.shape[1]
    guided = client(url).completions.create(model="tiny", prompt=[prompt], max_tokens=10, temperature=0,
                                            extra_body={"principles": ["humor=2"]})
    assert guided.choices[0].text != got.choices[0].text and guided.usage.model_extra["persrm_prompt_tokens"] > 0
    streamed = list(client(url).completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0,
                                                   stream=True, extra_body={"principles": ["humor=2"]}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == guided.choices[0].text
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")
    for bad, param in (({"echo": True}, "echo"), ({"prompt": ["a", "b"]}, "prompt"), ({"logprobs": 2}, "logprobs")):
        r = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": prompt, **bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


# -- a server that is kept busy --------------------------------------------------------------------------------

@pytest.fixture
def busy_server(long_model):
    """One row, one place in the queue."""
    cfg = DecodeConfig(llm=str(long_model), rm=None, max_new_tokens=8)
    svc = build_service(cfg, max_batch=1, max_queue=1, max_tokens=8000, name="tiny")
    with running_server(svc) as url:
        yield url, svc


def open_stream(url, max_tokens=8000):
    """A streaming request left open, read up to its first words; returns (client, response, its lines).
    (Keep the lines: when their iterator is collected, httpx closes the response.)"""
    http = httpx.Client(timeout=60)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, "stream": True}
    r = http.send(http.build_request("POST", f"{url}/v1/chat/completions", json=body), stream=True)
    lines = r.iter_lines()
    for _ in range(3):  # the role chunk and two pieces of text: the row is decoding
        assert next(lines).startswith("data: ")
        next(lines)  # the blank line after each event
    return http, r, lines


def test_a_full_queue_gets_429_and_the_server_goes_on(busy_server):
    url, _ = busy_server
    http, long, _lines = open_stream(url)
    try:
        assert health(url)["live"] == 1
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(ask, url, "hi", max_tokens=4)  # takes the one place in the queue
            wait_for(lambda: health(url)["waiting"] == 1, "the second request to queue")
            with pytest.raises(openai.RateLimitError, match="--max-queue 1"):
                ask(url, "hi", max_tokens=4)
            long.close()  # the client leaves: its row is freed, and the waiting request runs
            assert waiting.result().usage.completion_tokens == 4
    finally:
        long.close()
        http.close()
    assert ask(url, "hi", max_tokens=4).usage.completion_tokens == 4


@pytest.fixture
def held_server(tiny_llama):
    """Eight rows and four places in the queue, with the engine thread held at its next prefill until the
    test lets it go: requests arrive "at once", before any is admitted."""
    cfg = DecodeConfig(llm=str(tiny_llama), rm=None, max_new_tokens=8)
    svc = build_service(cfg, max_batch=8, max_queue=4, max_tokens=8, name="tiny")
    go = threading.Event()
    real = svc.decoder.texts

    def texts(req):
        if threading.current_thread().name == "pad-engine":
            go.wait(60)
        return real(req)

    svc.decoder.texts = texts
    sizes = []  # the number of requests each prefill admits
    make_batch = svc.decoder.batch

    def batch(settings=None):
        b = make_batch(settings)
        admit = b.admit
        b.admit = lambda reqs: (sizes.append(len(reqs)), admit(reqs))[1]
        return b

    svc.decoder.batch = batch
    with running_server(svc) as url:
        try:
            yield url, go, sizes
        finally:
            go.set()


def test_429_only_when_rows_and_queue_are_both_full(held_server):
    """Fault 2: 12 simultaneous requests fit 8 rows + 4 queue places; the 13th gets 429 with Retry-After."""
    url, go, _ = held_server
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(ask, url, "hi", max_tokens=2)
        wait_for(lambda: health(url)["waiting"] == 0 and not first.done(), "the first request to be taken")
        rest = [pool.submit(ask, url, "hi", max_tokens=2) for _ in range(11)]
        wait_for(lambda: health(url)["waiting"] == 11, "eleven requests to wait", tries=600)  # 30 s: slow under load
        with pytest.raises(openai.RateLimitError, match="--max-queue 4") as e:
            ask(url, "hi", max_tokens=2)
        assert int(e.value.response.headers["retry-after"]) >= 1
        go.set()
        answers = [f.result() for f in [first, *rest]]
    assert [a.usage.completion_tokens for a in answers] == [2] * 12
    assert ask(url, "hi", max_tokens=2).usage.completion_tokens == 2


def test_arrivals_waiting_at_a_step_join_in_one_prefill(held_server):
    """Requests that arrive while the engine is busy join the batch together, one `admit` (one prefill per
    model) for all that fit, instead of one prefill each holding up a step of the others."""
    url, go, sizes = held_server
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(ask, url, "hi", max_tokens=2)
        wait_for(lambda: sizes == [1], "the first request to be taken")
        rest = [pool.submit(ask, url, BREAD, max_tokens=2) for _ in range(11)]
        wait_for(lambda: health(url)["waiting"] == 11, "eleven requests to wait", tries=600)  # 30 s: slow under load
        go.set()
        assert all(f.result().usage.completion_tokens == 2 for f in [first, *rest])
    assert sizes[:2] == [1, 7] and sum(sizes) == 12, sizes  # then the 4 that waited for rows


def test_a_client_leaving_mid_stream_frees_its_row(busy_server):
    url, _ = busy_server
    before = health(url)
    http, long, _lines = open_stream(url)
    assert health(url)["live"] == 1
    long.close()
    http.close()
    h = wait_for(lambda: (lambda h: h if h["live"] == 0 else None)(health(url)), "the row to be freed")
    assert h["cancelled"] == before["cancelled"] + 1  # cancelled, not run to its 8000 tokens
    assert ask(url, "hi", max_tokens=4).usage.completion_tokens == 4


def test_a_failing_request_leaves_the_others_and_the_server(busy_server, monkeypatch):
    """A fault inside the engine thread (here: tokenizing one prompt) fails that request alone."""
    url, svc = busy_server
    dec = svc.decoder
    real = dec.texts

    def texts(req):
        if threading.current_thread().name == "pad-engine" and "BOOM" in req.prompt[-1]["content"]:
            raise RuntimeError("injected fault")
        return real(req)

    monkeypatch.setattr(dec, "texts", texts)
    with pytest.raises(openai.InternalServerError, match="could not be prefilled"):
        ask(url, "BOOM", max_tokens=4)
    assert ask(url, "hi", max_tokens=4).usage.completion_tokens == 4
    assert health(url)["status"] == "ok"


def test_requests_are_tokenized_off_the_event_loop(busy_server, monkeypatch):
    """Checking a prompt against the context renders and tokenizes it: not on the thread that runs the event
    loop (`running_server`'s "pad-serve"), where it would hold up every other client's chunks."""
    url, svc = busy_server
    dec, threads = svc.decoder, []
    real = dec.texts

    def texts(req):
        threads.append(threading.current_thread().name)
        return real(req)

    monkeypatch.setattr(dec, "texts", texts)
    assert ask(url, "hi", max_tokens=2).usage.completion_tokens == 2
    assert "pad-engine" in threads and "pad-serve" not in threads and len(threads) == 2, threads


def test_a_client_giving_up_on_a_plain_request_frees_its_row(busy_server):
    url, _ = busy_server
    before = health(url)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=1.0)  # gives up after a second
    h = wait_for(lambda: (lambda h: h if h["live"] == 0 else None)(health(url)), "the row to be freed")
    assert h["cancelled"] == before["cancelled"] + 1
    assert ask(url, "hi", max_tokens=4).usage.completion_tokens == 4
