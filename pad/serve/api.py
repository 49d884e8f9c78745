"""The OpenAI-compatible HTTP layer of `pad serve`: request checking, the FastAPI app, answers and streams.

A chat request is the OpenAI body plus PAD's own fields at the top level (the official client sends them
with `extra_body`):

    {"model": "...", "messages": [...], "max_tokens": 64, "temperature": 0, "seed": 1, "stream": true,
     "stop": ["\\n\\n"], "principles": [{"name": "concise", "weight": 1.0}, "humor=0.5"],
     "topk": 10, "reference": "base", "mode": "greedy"}

FastAPI checks each field's JSON type against `pad.serve.schema.ChatRequest`; `parse_chat` checks values and
what PAD supports. Either way a bad request gets 400 in OpenAI's error shape, one line naming the field,
before it joins the queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pad.decode.config import MODE_ALIASES, DecodeConfig
from pad.decode.engine import DecodeRequest, PADDecoder, SamplingSettings, check_kl_budget, context_size
from pad.errors import PadError
from pad.principles import Principle
from pad.serve.decoder import RawPrompt
from pad.serve.metrics import Metrics
from pad.serve.schema import (
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    Completion,
    CompletionRequest,
    Error,
    ModelList,
    WeightedPrinciple,
)
from pad.serve.worker import Job, QueueFull, ShuttingDown, Worker, async_notifier

log = logging.getLogger("pad.serve")

# OpenAI's fields that PAD has no use for beyond their default value, and that value.
NEUTRAL = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0}
# float32 holds temperatures far below this, but the guided scores divided by them overflow: the row would
# silently become greedy (and, below float32's range, drop its principles).
MIN_TEMPERATURE = 0.01
# A row's random stream is keyed by its seed and its id. The ids are the ones `pad decode --prompt P` gives
# its prompts (gather_prompts in pad/decode/run.py: "cli-0", "cli-1", ...), so choice i of a request with
# seed S is what `pad decode --seed S` writes for the (i+1)-th of as many `--prompt P`.
ROW_ID = "cli-{}"
ROUTES = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/docs", "/openapi.json")


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind


@dataclass
class Service:
    """What the app serves: one decoder, the worker that drives it, and the server-side settings."""

    decoder: PADDecoder
    worker: Worker
    defaults: DecodeConfig
    model_id: str
    max_tokens: int  # the most tokens one request may ask for
    api_key: str | None = None  # required as a bearer token on every route but /health
    max_body: int = 1 << 20  # bytes
    profiles: Path | None = None  # the folder a request's `profile` names a file of
    metrics: Metrics = field(default_factory=Metrics)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def end_ids(self) -> frozenset[int]:
        return frozenset(self.decoder.eos_ids.tolist())


@dataclass
class ChatOptions:
    stream: bool
    include_usage: bool
    stops: list[str]
    prompt_tokens: int  # the base's prompt
    persrm_prompt_tokens: int  # every PersRM sequence of one row
    logprobs: int | None = None  # None: none asked for; n: each token's and the n likeliest
    chat: bool = True  # a chat completion, else a plain one (/v1/completions)


def _finite(v: float) -> bool:
    return math.isfinite(v)


def _param(loc: tuple) -> str:
    """pydantic's error location as OpenAI's `param`: ("body", "messages", 0, "role") -> "messages[0].role".
    The names of a union's members ("str", "list[str]", "WeightedPrinciple") are left out."""
    out = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part.islower() and part not in ("str", "int", "float", "bool", "list", "dict"):
            out += f".{part}" if out else part
    return out


def validation_error(e: RequestValidationError) -> BadRequest:
    """The field FastAPI's check refused, as one line: the field, what it must be, what it was. Of a union's
    errors (one per member), the deepest field's: {"weight": "heavy"} is a bad weight, not a bad string."""
    errors = e.errors()
    if errors[0]["type"] == "json_invalid":
        return BadRequest(f"the body is not valid JSON: {errors[0].get('ctx', {}).get('error', errors[0]['msg'])}")
    params = [_param(tuple(err["loc"])) for err in errors]
    param = max(params, key=len)
    first = errors[params.index(param)]
    if not param:
        return BadRequest("the body must be a JSON object (sent with Content-Type: application/json)")
    if first["type"] == "extra_forbidden":
        return BadRequest(f"unknown field {param!r}", param)
    if first["type"] == "missing":
        return BadRequest(f"{param} is required", param)
    said = list(dict.fromkeys(err["msg"] for err, p in zip(errors, params) if p == param))
    got = repr(first.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return BadRequest(f"{param}: {', or '.join(said)}; got {got}", param)


def parse_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    if not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", "messages")
    roles = {"developer": "system"}
    out = [{"role": roles.get(m.role, m.role),
            "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)}
           for m in messages]
    if not any(m["role"] == "user" for m in out):
        raise BadRequest("messages hold no user turn; PAD wraps the last user turn in the principle prompt", "messages")
    return out


def parse_principles(value: str | list[str | WeightedPrinciple], default_weight: float) -> list[Principle]:
    items = [value] if isinstance(value, str) else value
    out = []
    for i, item in enumerate(items):
        where = f"principles[{i}]"
        if isinstance(item, str):
            try:
                out.append(Principle.parse(item, default_weight))
            except ValueError as e:
                raise BadRequest(f"{where}: {e}", where) from None
            continue
        weight = default_weight if item.weight is None else item.weight
        if not item.name.strip():
            raise BadRequest(f"{where}.name must be a non-empty string, got {item.name!r}", f"{where}.name")
        if not _finite(weight):
            raise BadRequest(f"{where}.weight must be a finite number, got {weight!r}", f"{where}.weight")
        out.append(Principle(item.name.strip(), float(weight)))
    return out


def parse_chat(body: ChatRequest, svc: Service) -> tuple[list[DecodeRequest], ChatOptions]:
    """Check a chat body's values; the requests the engine runs (one per choice) and how to answer them.
    Tokenizes the prompts (to check them against the context): call it off the event loop."""
    _check_model(body, svc)
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequest("top_logprobs is only allowed with logprobs: true", "top_logprobs")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= 20:
        raise BadRequest(f"top_logprobs must be a whole number from 0 to 20, got {body.top_logprobs}", "top_logprobs")
    reqs, opts = _parse_settings(body, svc, parse_messages(body.messages), body.max_completion_tokens)
    opts.logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return reqs, opts


def parse_completion(body: CompletionRequest, svc: Service) -> tuple[list[DecodeRequest], ChatOptions]:
    """As `parse_chat`, for a plain prompt (no chat template)."""
    _check_model(body, svc)
    for name, neutral in (("echo", False), ("best_of", 1), ("suffix", None), ("logprobs", None)):
        v = getattr(body, name)
        if v is not None and v != neutral:
            why = "; ask /v1/chat/completions for logprobs" if name == "logprobs" else ""
            raise BadRequest(f"{name}={v!r} is not supported on /v1/completions, only {neutral!r}{why}", name)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise BadRequest(f"prompt must be one string (or a list of one), got a list of {len(prompt)}", "prompt")
        prompt = prompt[0]
    reqs, opts = _parse_settings(body, svc, RawPrompt(prompt), None)
    opts.chat = False
    return reqs, opts


def _check_model(body, svc: Service) -> None:
    if body.model != svc.model_id:
        raise BadRequest(f"model {body.model!r} is not served here; this server serves {svc.model_id!r}", "model",
                         status=404, kind="model_not_found")


def _parse_settings(body: ChatRequest | CompletionRequest, svc: Service, prompt, max_completion_tokens: int | None
                    ) -> tuple[list[DecodeRequest], ChatOptions]:
    """The fields chat and plain completions share: sampling, PAD's own, stops, streaming."""
    for name, neutral in NEUTRAL.items():
        v = getattr(body, name)
        if v is not None and v != neutral:
            why = " (PAD samples over the top-k candidates: use topk)" if name == "top_p" else ""
            raise BadRequest(f"{name}={v!r} is not supported, only {neutral!r}{why}", name)
    n = 1 if body.n is None else body.n
    if not 1 <= n <= svc.worker.max_batch:
        raise BadRequest(f"n must be a whole number from 1 to {svc.worker.max_batch} (--max-batch), got {n!r}", "n")
    d = svc.defaults

    for name, v in (("max_tokens", body.max_tokens), ("max_completion_tokens", max_completion_tokens)):
        # both checked, though the second wins
        if v is not None and v < 1:
            raise BadRequest(f"{name} must be a whole number >= 1, got {v!r}", name)
        if v is not None and v > svc.max_tokens:
            raise BadRequest(f"{name}={v} is above this server's cap of {svc.max_tokens} tokens (--max-tokens)", name)
    cap_name = "max_completion_tokens" if max_completion_tokens is not None else "max_tokens"
    cap = max_completion_tokens if max_completion_tokens is not None else body.max_tokens

    mode, temperature = d.mode, d.temperature
    t = body.temperature
    if t is not None:
        if not _finite(t) or t < 0:
            raise BadRequest(f"temperature must be a number >= 0, got {t!r}", "temperature")
        if 0 < t < MIN_TEMPERATURE:
            raise BadRequest(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE}, got {t!r}", "temperature")
        mode, temperature = ("greedy", temperature) if t == 0 else ("sample", float(t))
    if body.mode is not None:
        mode = MODE_ALIASES[body.mode]
        if mode == "sample" and t == 0:
            raise BadRequest("mode 'sample' needs a temperature > 0", "temperature")

    seed = secrets.randbits(31) if body.seed is None else body.seed  # unseeded: each request its own randomness
    topk = d.topk if body.topk is None else body.topk
    if not 1 <= topk <= svc.decoder.vocab:
        raise BadRequest(f"topk must be a whole number from 1 to {svc.decoder.vocab}, got {topk!r}", "topk")
    reference = body.reference or d.reference
    if body.profile is not None:
        if body.principles is not None:
            raise BadRequest("profile gives the principles and their weights: send one of profile and principles",
                             "profile")
        principles = _profile(svc, body.profile)
    else:
        principles = d.parsed_principles() if body.principles is None else parse_principles(body.principles,
                                                                                            d.weight)
    if any(p.weight != 0 for p in principles) and svc.decoder.persrm is None:
        raise BadRequest("this server has no PersRM (start it with --rm) and cannot follow principles", "principles")

    stops = [] if body.stop is None else [body.stop] if isinstance(body.stop, str) else body.stop
    if len(stops) > 4 or not all(stops):
        raise BadRequest("stop must be a non-empty string or a list of at most 4 of them", "stop")
    stream = bool(body.stream)
    if body.stream_options is not None and not stream:
        raise BadRequest("stream_options is only allowed with stream: true", "stream_options")

    try:
        check_kl_budget(body.kl_budget)
    except PadError as e:
        raise BadRequest(str(e), "kl_budget") from None
    settings = SamplingSettings(topk=topk, mode=mode, temperature=temperature,
                                max_new_tokens=cap or min(d.max_new_tokens, svc.max_tokens), seed=seed,
                                kl_budget=body.kl_budget)
    reqs = [DecodeRequest(prompt, principles, id=ROW_ID.format(i), settings=settings, reference=reference)
            for i in range(n)]
    prompt_tokens, persrm_tokens = _check_context(svc, reqs[0], cap, cap_name)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return reqs, ChatOptions(stream, include_usage, stops, prompt_tokens, persrm_tokens)


PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _profile(svc: Service, name: str) -> list[Principle]:
    """The principles of profile `name`: the file NAME.json in the server's --profiles folder, never a path."""
    if svc.profiles is None:
        raise BadRequest("this server has no profiles (start it with --profiles DIR)", "profile")
    if not PROFILE_NAME.fullmatch(name) or ".." in name:
        raise BadRequest(f"profile must be a name of letters, digits, '_', '.' and '-', got {name!r}", "profile")
    path = svc.profiles / f"{name}.json"
    if not path.is_file():
        raise BadRequest(f"no profile {name!r} on this server", "profile", status=404, kind="not_found_error")
    from pad.decode.profiles import load_profile

    try:
        return load_profile(path).principles
    except PadError as e:
        raise BadRequest(f"profile {name!r}: {e}", "profile") from None


def _check_context(svc: Service, req: DecodeRequest, cap: int | None, cap_name: str) -> tuple[int, int]:
    """(the base's prompt tokens, the PersRM's prompt tokens of one row); 400 if a sequence of the row leaves
    no room for one new token, or for `cap` new tokens when the request asked for them (vLLM does the same;
    without max_tokens the answer ends where the context does)."""
    dec = svc.decoder
    base_text, rm_texts, ref_text = dec.texts(req)
    need = cap or 1
    n = len(dec.tok(base_text, add_special_tokens=False)["input_ids"])
    ctx = context_size(dec.base)
    if ctx is not None and n + need > ctx:
        if n >= ctx or cap is None:
            raise BadRequest(f"the prompt is {n} tokens with the principle prompt; the model's context is {ctx} "
                             "tokens", "messages")
        raise BadRequest(f"the prompt is {n} tokens with the principle prompt and {cap_name} is {cap}: more than "
                         f"the model's context of {ctx} tokens", cap_name)
    ctx_r = context_size(dec.persrm) if dec.persrm is not None else None
    if req.reference == "prompted-base":  # the base reads the principle prompts too
        ctx_r = min(c for c in (ctx, ctx_r) if c is not None) if ctx or ctx_r else None
    total = 0
    for text in rm_texts + ([ref_text] if ref_text else []):
        m = len(dec.rm_tok(text, add_special_tokens=False)["input_ids"])
        total += m
        if ctx_r is not None and m + need > ctx_r:
            raise BadRequest(f"the PersRM's prompt is {m} tokens" + (f" and {cap_name} is {cap}" if cap else "")
                             + f": more than its context of {ctx_r} tokens", cap_name if cap and m < ctx_r else "messages")
    return n, total


def _error(message: str, status: int, param: str | None = None, kind: str = "invalid_request_error",
           code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class Gate:
    """ASGI middleware in front of every route: counts answers by status for /metrics, checks the API key
    (in constant time) and bounds the body, before FastAPI reads any of it."""

    def __init__(self, app, svc: Service):
        self.app, self.svc = app, svc
        self.key = svc.api_key.encode() if svc.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._gate(scope, receive, counted)
        finally:
            path = scope["path"] if scope["path"] in ROUTES else "other"  # fuzzers must not grow the label set
            self.svc.metrics.requests.labels(path=path, status=str(status)).inc()

    async def _gate(self, scope, receive, send):
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"] != "/health":
            given = headers.get(b"authorization", b"")
            scheme, _, token = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                why = "no API key given" if not given else "the API key is not valid"
                resp = _error(f"{why}: send it as 'Authorization: Bearer KEY' (the openai client's api_key)", 401,
                              code="invalid_api_key")
                return await resp(scope, receive, send)
        limit = self.svc.max_body
        too_big = _error(f"the body is larger than this server's limit of {limit} bytes (--max-body)", 413)
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await too_big(scope, receive, send)
        chunks, size = [], 0
        while True:  # read the body here, bounded, whatever Content-Length claimed (or chunked: none)
            message = await receive()
            if message["type"] != "http.request":
                return
            size += len(message.get("body", b""))
            if size > limit:
                return await too_big(scope, receive, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()  # then: the disconnect, when it comes

        await self.app(scope, replay, send)


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
    app.add_middleware(Gate, svc=svc)
    svc.metrics.watch(svc.worker)
    errors = {code: {"model": Error} for code in (400, 401, 404, 413, 429, 500, 503)}

    @app.exception_handler(BadRequest)
    async def bad_request(request, e: BadRequest):
        log.info("rejected %s %s: %s", request.method, request.url.path, e.message)
        return _error(e.message, e.status, e.param, e.kind)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        return await bad_request(request, validation_error(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):  # 404 and 405 of routes, in OpenAI's shape
        what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(what.get(e.status_code, str(e.detail)), e.status_code, kind="invalid_request_error",
                      headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request, e: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(f"internal error: {type(e).__name__}", 500, kind="server_error")

    @app.get("/health")
    async def health():
        w = svc.worker
        return {"status": "draining" if w.closed else "ok" if w.alive else "stopped", "live": w.live,
                "waiting": w.waiting, "served": w.served, "cancelled": w.cancelled,
                "max_batch": w.max_batch, "max_queue": w.max_queue, "backbone": svc.decoder.backbone,
                "model": svc.model_id}

    @app.get("/metrics", response_class=Response)
    async def metrics():
        return Response(svc.metrics.render(), media_type=svc.metrics.content_type)

    @app.get("/v1/models", response_model=ModelList, responses={401: errors[401]})
    async def models():
        return {"object": "list", "data": [{"id": svc.model_id, "object": "model", "created": svc.created,
                                             "owned_by": "pad"}]}

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=errors)
    async def chat(body: ChatRequest, request: Request):
        """A chat completion; with `stream: true`, server-sent events of `chat.completion.chunk` objects."""
        return await answer(request, *await run_in_threadpool(parse_chat, body, svc))  # tokenizing: off the loop

    @app.post("/v1/completions", response_model=Completion, responses=errors)
    async def completions(body: CompletionRequest, request: Request):
        """A plain completion of `prompt` (no chat template); with `stream: true`, server-sent events."""
        return await answer(request, *await run_in_threadpool(parse_completion, body, svc))

    async def answer(request: Request, reqs: list[DecodeRequest], opts: ChatOptions):
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        cid = f"{'chatcmpl' if opts.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        jobs = [Job(id=cid if len(reqs) == 1 else f"{cid}-{i}", request=r, tokenizer=svc.decoder.tok,
                    eos=svc.end_ids, stops=opts.stops, prompt_tokens=opts.prompt_tokens,
                    notify=async_notifier(loop, queue, i), metrics=svc.metrics, logprobs=opts.logprobs)
                for i, r in enumerate(reqs)]
        try:
            svc.worker.submit(jobs)
        except QueueFull as e:
            log.info("rejected %s: %s", cid, e)
            return _error(str(e), 429, kind="rate_limit_exceeded", headers={"Retry-After": "1"})
        except ShuttingDown as e:
            return _error(str(e), 503, kind="server_error", headers={"Retry-After": "5"})
        req = reqs[0]
        head = {"id": cid, "created": int(time.time()), "model": svc.model_id}
        pad_info = {"principles": [{"name": p.name, "weight": p.weight} for p in req.principles],
                    "reference": req.reference, "topk": req.settings.topk, "mode": req.settings.mode,
                    "backbone": svc.decoder.backbone}
        if opts.stream:
            return StreamingResponse(_sse(svc, jobs, queue, head, opts), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        parts: list[list[str]] = [[] for _ in jobs]
        logprobs: list[list[dict]] = [[] for _ in jobs]
        reasons: list[str | None] = [None] * len(jobs)
        checked = time.monotonic()
        try:
            while None in reasons:
                try:
                    i, kind, value = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    kind = None
                if time.monotonic() - checked >= 0.5:  # text may arrive every few ms: look at the client anyway
                    checked = time.monotonic()
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                if kind is None:
                    continue
                if kind == "text":
                    parts[i].append(value)
                elif kind == "logprobs":
                    logprobs[i] += value
                elif kind == "end":
                    reasons[i] = value
                else:
                    return _error(value, 500, kind="server_error")
        finally:
            for job in jobs:
                if job.ended is None:
                    svc.worker.cancel(job)
        if "abort" in reasons:
            return _error("the server shut down before the answer was complete (its --drain-seconds ran out); "
                          "retry", 503, kind="server_error", headers={"Retry-After": "5"})
        if opts.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": "".join(parts[i])}, "finish_reason": r,
                        "logprobs": None if opts.logprobs is None else {"content": logprobs[i]}}
                       for i, r in enumerate(reasons)]
        else:
            choices = [{"index": i, "text": "".join(parts[i]), "finish_reason": r, "logprobs": None}
                       for i, r in enumerate(reasons)]
        return {**head, "object": "chat.completion" if opts.chat else "text_completion", "choices": choices,
                "usage": _usage(jobs, opts), "pad": pad_info}

    return app


def _usage(jobs: list[Job], opts: ChatOptions) -> dict:
    n = sum(job.count for job in jobs)
    return {"prompt_tokens": opts.prompt_tokens, "completion_tokens": n, "total_tokens": opts.prompt_tokens + n,
            "persrm_prompt_tokens": opts.persrm_prompt_tokens}


async def _sse(svc: Service, jobs: list[Job], queue: asyncio.Queue, head: dict, opts: ChatOptions):
    """Server-sent events in OpenAI's chunk format, then [DONE]; every choice ends with a finish reason
    ("abort" when the server's drain ran out). A client that leaves cancels the rows."""

    what = "chat.completion.chunk" if opts.chat else "text_completion"

    def chunk(i: int, delta: dict, reason: str | None = None, logprobs: list[dict] | None = None) -> str:
        lp = None if logprobs is None else {"content": logprobs}
        choice = ({"index": i, "delta": delta, "finish_reason": reason, "logprobs": lp} if opts.chat else
                  {"index": i, "text": delta.get("content", ""), "finish_reason": reason, "logprobs": None})
        return f"data: {json.dumps({**head, 'object': what, 'choices': [choice]}, ensure_ascii=False)}\n\n"

    try:
        for i in range(len(jobs) if opts.chat else 0):  # the role first, as OpenAI's chat streams do
            yield chunk(i, {"role": "assistant", "content": ""})
        open_, pending = len(jobs), {}
        while open_:
            i, kind, value = await queue.get()
            if kind == "logprobs":
                pending[i] = value  # the tokens of the text that comes next
            elif kind == "text":
                yield chunk(i, {"content": value}, logprobs=pending.pop(i, None))
            elif kind == "end":
                yield chunk(i, {}, value)
                open_ -= 1
            else:
                yield f"data: {json.dumps({'error': {'message': value, 'type': 'server_error'}})}\n\n"
                break
        else:
            if opts.include_usage:
                obj = {**head, "object": what, "choices": [], "usage": _usage(jobs, opts)}
                yield f"data: {json.dumps(obj)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            if job.ended is None:
                svc.worker.cancel(job)
