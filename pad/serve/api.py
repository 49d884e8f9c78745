"""The OpenAI-compatible HTTP layer of `pad serve`: request checking, the FastAPI app, answers and streams.

A chat request is the OpenAI body plus PAD's own fields at the top level (the official client sends them
with `extra_body`):

    {"model": "...", "messages": [...], "max_tokens": 64, "temperature": 0, "seed": 1, "stream": true,
     "stop": ["\\n\\n"], "principles": [{"name": "concise", "weight": 1.0}, "humor=0.5"],
     "topk": 10, "reference": "base", "mode": "greedy"}

Every field is checked before the request joins the queue; a bad one gets 400 with one line naming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from pad.decode.config import MODE_ALIASES, DecodeConfig
from pad.decode.engine import REFERENCES, DecodeRequest, PADDecoder, SamplingSettings, context_size
from pad.principles import Principle
from pad.serve.worker import Job, QueueFull, Worker, async_notifier

log = logging.getLogger("pad.serve")

# Fields of OpenAI's chat body that change nothing here at their default value, and what that value is.
NEUTRAL = {"n": 1, "top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False}
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "top_logprobs"}
KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "seed", "stream",
         "stream_options", "stop", "principles", "topk", "reference", "mode"} | set(NEUTRAL) | IGNORED
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


@dataclass
class Service:
    """What the app serves: one decoder, the worker that drives it, and the server-side defaults."""

    decoder: PADDecoder
    worker: Worker
    defaults: DecodeConfig
    model_id: str
    max_tokens: int  # the most tokens one request may ask for
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def end_ids(self) -> frozenset[int]:
        return frozenset(self.decoder.eos_ids.tolist())


@dataclass
class ChatOptions:
    stream: bool
    include_usage: bool
    stops: list[str]
    prompt_tokens: int


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_messages(value) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"{where} must be an object with role and content", where)
        role = m.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}.role {role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text ones
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise BadRequest(f"{where}.content[{j}] must be a text part ({{\"type\": \"text\", \"text\": ...}})",
                                     f"{where}.content")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise BadRequest(f"{where}.content must be a string or a list of text parts", f"{where}.content")
        out.append({"role": ROLES[role], "content": content})
    if not any(m["role"] == "user" for m in out):
        raise BadRequest("messages hold no user turn; PAD wraps the last user turn in the principle prompt", "messages")
    return out


def parse_principles(value, default_weight: float) -> list[Principle]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadRequest("principles must be a list of 'name=weight' strings or {name, weight} objects", "principles")
    out = []
    for i, item in enumerate(items):
        where = f"principles[{i}]"
        if isinstance(item, str):
            try:
                out.append(Principle.parse(item, default_weight))
            except ValueError as e:
                raise BadRequest(f"{where}: {e}", where) from None
        elif isinstance(item, dict):
            extra = sorted(set(item) - {"name", "weight"})
            if extra:
                raise BadRequest(f"{where} has unknown field {extra[0]!r} (known: name, weight)", f"{where}.{extra[0]}")
            name, weight = item.get("name"), item.get("weight", default_weight)
            if not isinstance(name, str) or not name.strip():
                raise BadRequest(f"{where}.name must be a non-empty string, got {name!r}", f"{where}.name")
            if not _is_number(weight):
                raise BadRequest(f"{where}.weight must be a finite number, got {weight!r}", f"{where}.weight")
            out.append(Principle(name.strip(), float(weight)))
        else:
            raise BadRequest(f"{where} must be a 'name=weight' string or a {{name, weight}} object", where)
    return out


def parse_chat(body: Any, svc: Service) -> tuple[DecodeRequest, ChatOptions]:
    """Check a chat body field by field; the request the engine runs and how to answer it."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}", unknown[0])
    for name, neutral in NEUTRAL.items():
        if body.get(name) is not None and body[name] != neutral:
            why = " (PAD samples over the top-k candidates: use topk)" if name == "top_p" else ""
            raise BadRequest(f"{name}={body[name]!r} is not supported, only {neutral!r}{why}", name)
    d = svc.defaults
    model = body.get("model")
    if not isinstance(model, str):
        raise BadRequest("model is required: the id that GET /v1/models lists", "model")
    if model != svc.model_id:
        raise BadRequest(f"model {model!r} is not served here; this server serves {svc.model_id!r}", "model",
                         status=404, kind="model_not_found")
    messages = parse_messages(body.get("messages"))

    cap = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if cap is None:
        cap = min(d.max_new_tokens, svc.max_tokens)
    elif not _is_int(cap) or cap < 1:
        raise BadRequest(f"{name} must be a whole number >= 1, got {cap!r}", name)
    elif cap > svc.max_tokens:
        raise BadRequest(f"{name}={cap} is above this server's cap of {svc.max_tokens} tokens (--max-tokens)", name)

    mode, temperature = d.mode, d.temperature
    t = body.get("temperature")
    if t is not None:
        if not _is_number(t) or t < 0:
            raise BadRequest(f"temperature must be a number >= 0, got {t!r}", "temperature")
        mode, temperature = ("greedy", temperature) if t == 0 else ("sample", float(t))
    if body.get("mode") is not None:
        if body["mode"] not in MODE_ALIASES:
            raise BadRequest(f"mode {body['mode']!r} is not one of greedy, sample", "mode")
        mode = MODE_ALIASES[body["mode"]]
        if mode == "sample" and t == 0:
            raise BadRequest("mode 'sample' needs a temperature > 0", "temperature")

    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise BadRequest(f"seed must be a whole number, got {seed!r}", "seed")
    if seed is None:  # unseeded: each request its own randomness
        seed = secrets.randbits(31)

    topk = body.get("topk", d.topk)
    if not _is_int(topk) or not 1 <= topk <= svc.decoder.vocab:
        raise BadRequest(f"topk must be a whole number from 1 to {svc.decoder.vocab}, got {topk!r}", "topk")
    reference = body.get("reference", d.reference)
    if reference not in REFERENCES:
        raise BadRequest(f"reference {reference!r} is not one of {', '.join(REFERENCES)}", "reference")

    principles = d.parsed_principles() if body.get("principles") is None else parse_principles(body["principles"], d.weight)
    if any(p.weight != 0 for p in principles) and svc.decoder.persrm is None:
        raise BadRequest("this server has no PersRM (start it with --rm) and cannot follow principles", "principles")

    stops = body.get("stop")
    stops = [] if stops is None else [stops] if isinstance(stops, str) else stops
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest("stop must be a non-empty string or a list of at most 4 of them", "stop")

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be true or false, got {stream!r}", "stream")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict) or not set(so) <= {"include_usage"} or not isinstance(so.get("include_usage", False), bool):
        raise BadRequest("stream_options may only hold include_usage: true or false", "stream_options")

    try:
        settings = SamplingSettings(topk=topk, mode=mode, temperature=temperature, max_new_tokens=cap, seed=seed)
    except Exception as e:  # PadError: a value the checks above let through
        raise BadRequest(str(e)) from None
    # The row's random stream is keyed by the seed alone ("chat"): the same seed, the same answer.
    req = DecodeRequest(messages, principles, id="chat", settings=settings, reference=reference)
    prompt_tokens = _check_context(svc, req)
    return req, ChatOptions(stream, so.get("include_usage", False), stops, prompt_tokens)


def _check_context(svc: Service, req: DecodeRequest) -> int:
    """The base's prompt length; 400 if any sequence of the row leaves no room for one new token."""
    dec = svc.decoder
    base_text, rm_texts, ref_text = dec.texts(req)
    n = len(dec.tok(base_text, add_special_tokens=False)["input_ids"])
    ctx = context_size(dec.base)
    if ctx is not None and n >= ctx:
        raise BadRequest(f"the prompt is {n} tokens with the principle prompt; the model's context is {ctx} tokens",
                         "messages")
    ctx_r = context_size(dec.persrm) if dec.persrm is not None else None
    if ctx_r is not None:
        for text in rm_texts + ([ref_text] if ref_text else []):
            m = len(dec.rm_tok(text, add_special_tokens=False)["input_ids"])
            if m >= ctx_r:
                raise BadRequest(f"the PersRM's prompt is {m} tokens; its context is {ctx_r} tokens", "messages")
    return n


def _error(message: str, status: int, param: str | None = None, kind: str = "invalid_request_error"):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)


def create_app(svc: Service):
    """The FastAPI app over a service; the worker starts and stops with the app."""
    from pad import __version__

    @asynccontextmanager
    async def lifespan(app):
        if not svc.worker.alive:
            svc.worker.start()
        yield
        svc.worker.stop()

    app = FastAPI(title="pad", version=__version__, lifespan=lifespan,
                  description="Personalized alignment at decoding time: OpenAI-compatible chat completions where "
                              "every request brings its own principles.")

    @app.exception_handler(BadRequest)
    async def bad_request(request, e: BadRequest):
        log.info("rejected %s %s: %s", request.method, request.url.path, e.message)
        return _error(e.message, e.status, e.param, e.kind)

    @app.get("/health")
    async def health():
        w = svc.worker
        return {"status": "ok" if w.alive else "stopped", "live": w.live, "waiting": w.waiting, "served": w.served,
                "cancelled": w.cancelled,
                "max_batch": w.max_batch, "max_queue": w.max_queue, "backbone": svc.decoder.backbone,
                "model": svc.model_id}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": svc.model_id, "object": "model", "created": svc.created,
                                             "owned_by": "pad"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not valid JSON: {e}") from None
        req, opts = parse_chat(body, svc)
        queue: asyncio.Queue = asyncio.Queue()
        job = Job(id=f"chatcmpl-{uuid.uuid4().hex[:24]}", request=req, tokenizer=svc.decoder.tok, eos=svc.end_ids,
                  stops=opts.stops, prompt_tokens=opts.prompt_tokens,
                  notify=async_notifier(asyncio.get_running_loop(), queue))
        try:
            svc.worker.submit(job)
        except QueueFull as e:
            log.info("rejected %s: %s", job.id, e)
            return _error(str(e), 429, kind="rate_limit_exceeded")
        head = {"id": job.id, "created": int(time.time()), "model": svc.model_id}
        pad_info = {"principles": [{"name": p.name, "weight": p.weight} for p in req.principles],
                    "reference": req.reference, "topk": req.settings.topk, "mode": req.settings.mode,
                    "backbone": svc.decoder.backbone}
        if opts.stream:
            return StreamingResponse(_sse(svc, job, queue, head, opts), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        parts, reason = [], None
        checked = time.monotonic()
        try:
            while reason is None:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    kind = value = None
                if time.monotonic() - checked >= 0.5:  # text may arrive every few ms: look at the client anyway
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                if kind is None:
                    continue
                if kind == "text":
                    parts.append(value)
                elif kind == "end":
                    reason = value
                else:
                    return _error(value, 500, kind="server_error")
        finally:
            if job.ended is None or reason is None:
                svc.worker.cancel(job)
        n = job.count
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                             "finish_reason": reason, "logprobs": None}],
                "usage": {"prompt_tokens": opts.prompt_tokens, "completion_tokens": n,
                          "total_tokens": opts.prompt_tokens + n},
                "pad": pad_info}

    return app


async def _sse(svc: Service, job: Job, queue: asyncio.Queue, head: dict, opts: ChatOptions):
    """Server-sent events in OpenAI's chunk format, then [DONE]. A client that leaves cancels the row."""

    def chunk(delta: dict, reason: str | None = None) -> str:
        obj = {**head, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await queue.get()
            if kind == "text":
                yield chunk({"content": value})
            elif kind == "end":
                yield chunk({}, value)
                if opts.include_usage:
                    n = job.count
                    usage = {"prompt_tokens": opts.prompt_tokens, "completion_tokens": n,
                             "total_tokens": opts.prompt_tokens + n}
                    yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
                break
            else:
                yield f"data: {json.dumps({'error': {'message': value, 'type': 'server_error'}})}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        if job.ended is None:
            svc.worker.cancel(job)
