"""The one thread that drives the decoding engine for a server.

HTTP handlers never touch the engine: they hand a `Job` to the `Worker`, which admits it into the running
`DecodeBatch` between steps (continuous batching), steps every live row, and sends each job its text as it
grows. Jobs wait in a bounded queue while the batch is full; a job can be cancelled at any time (the client
went away) and its row leaves the batch at the next step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pad.decode.engine import DecodeBatch, DecodeRequest, DecodeResult, PADDecoder, SamplingSettings

log = logging.getLogger("pad.serve")


class QueueFull(Exception):
    """Every row of the batch is busy and the waiting line is full."""


class ShuttingDown(Exception):
    """The server is draining: it takes no new requests."""


# what a job receives, in order: any number of ("text", delta), each after ("logprobs", entries) of the tokens
# that made it when the job asked for them, then one ("end", finish_reason) or ("error", msg)
Event = tuple[str, object]
# OpenAI's stand-in for a log-probability of -inf (JSON has no infinity)
FLOOR = -9999.0


@dataclass
class Job:
    """One request on its way through the worker."""

    id: str
    request: DecodeRequest
    tokenizer: object
    eos: frozenset[int]
    stops: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    notify: Callable[[Event], None] = lambda event: None  # called from the worker thread
    key: int | None = None  # its row in the batch, once admitted
    tokens: list[int] = field(default_factory=list)
    sent: str = ""  # text delivered so far
    count: int = 0  # completion tokens: the row's tokens, its end-of-sequence token included
    ended: str | None = None  # finish reason once over
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    finished_at: float | None = None
    metrics: object | None = None  # a `pad.serve.metrics.Metrics`, told of first tokens and ends
    logprobs: int | None = None  # None: not asked for; n: each token's log-probability and the n likeliest
    _pending: list[dict] = field(default_factory=list)  # log-probabilities of tokens whose text is not sent yet

    # -- text as it grows (worker thread) ----------------------------------------------------------

    def add_token(self, token: int) -> bool:
        """Take the row's next token; True when a stop string was reached (the row should stop)."""
        if self.ended is not None or token in self.eos:
            return False
        if self.first_token is None:
            self.first_token = time.perf_counter()
            if self.metrics is not None:
                self.metrics.first_token(self.first_token - self.submitted)
        self.tokens.append(token)
        self.count = len(self.tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self._send(text[:cut])
            self.end("stop")
            return True
        self._send(_stable_part(text, self.stops))
        return False

    def add_logprobs(self, token: int, cand, guided, base) -> None:
        """Record the chosen token's log-probability among the row's candidates (k,) under the distribution it
        was chosen from (`guided`), and the base model's (`base`, an extension field), with the likeliest."""
        if self.ended is not None or token in self.eos:
            return
        c, lp = cand.tolist(), {"guided": guided.tolist(), "base": base.tolist()}
        i = c.index(token)

        def item(t: int, v: float) -> dict:
            text = self.tokenizer.decode([t])
            return {"token": text, "logprob": max(v, FLOOR), "bytes": list(text.encode())}

        def top(which: str) -> list[dict]:
            best = sorted(range(len(c)), key=lambda j: -lp[which][j])[: self.logprobs]
            return [item(c[j], lp[which][j]) for j in best]

        self._pending.append({**item(token, lp["guided"][i]), "top_logprobs": top("guided"),
                              "base_logprob": max(lp["base"][i], FLOOR), "base_top_logprobs": top("base")})

    def finish(self, result: DecodeResult) -> None:
        """The engine's last word on the row (ignored if a stop string ended it first)."""
        if self.ended is not None:
            return
        if result.finish_reason == "skipped":
            self.fail("the prompt leaves no room in the model's context")
            return
        self.count = len(result.token_ids)
        self._send(result.text)
        self.end({"eos": "stop", "length": "length"}.get(result.finish_reason, result.finish_reason))

    def _send(self, text: str) -> None:
        if text.startswith(self.sent) and len(text) > len(self.sent):
            if self._pending:
                self.notify(("logprobs", self._pending))
                self._pending = []
            self.notify(("text", text[len(self.sent):]))
            self.sent = text

    def end(self, reason: str) -> None:
        self.ended, self.finished_at = reason, time.perf_counter()
        if self.metrics is not None:
            self.metrics.finished(self)
        self.notify(("end", reason))

    def fail(self, message: str) -> None:
        self.ended, self.finished_at = "error", time.perf_counter()
        self.notify(("error", message))


def _stable_part(text: str, stops: list[str]) -> str:
    """The part of `text` that later tokens cannot change: without a half-decoded character at the end,
    and without a tail that may be the start of a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:n]):
                hold = n
                break
    return text[: len(text) - hold]


def async_notifier(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int = 0) -> Callable[[Event], None]:
    """A job's `notify` that hands (index, kind, value) to an asyncio queue from the worker thread; the n
    choices of one request share a queue, told apart by their index."""

    def notify(event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, (index, *event))

    return notify


class Worker:
    """Runs a `DecodeBatch` in a thread: admits waiting jobs between steps, up to `max_batch` rows at once.

    max_queue: jobs that may wait beyond the free rows; `submit` raises QueueFull only when every row is
    taken and max_queue jobs wait.
    """

    def __init__(self, decoder: PADDecoder, settings: SamplingSettings, max_batch: int = 8, max_queue: int = 64,
                 metrics=None):
        self.dec, self.settings, self.metrics = decoder, settings, metrics
        self.max_batch, self.max_queue = max_batch, max_queue
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._cancels: list[Job] = []
        self._stopping = False
        self._closed = False  # draining: no new jobs
        self._abort = False  # the drain is over: end every job now
        self._joining = 0  # jobs taken from the queue and being prefilled (rows, though not yet in _live)
        self._live: dict[int, Job] = {}
        self.served = 0  # requests answered
        self.cancelled = 0  # rows freed because their client left (or the server stopped)
        self._thread = threading.Thread(target=self._run, name="pad-engine", daemon=True)

    # -- called from any thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Cancel what is live or waiting, and end the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue the jobs of one request (its n choices): all of them, or none (QueueFull, ShuttingDown)."""
        with self._cv:
            if self._stopping or self._closed:
                raise ShuttingDown("the server is shutting down; retry on another replica or later")
            # A waiting job takes a free row at the next step, so the queue only holds what the rows cannot.
            taken = len(self._live) + self._joining + len(self._waiting)
            if taken + len(jobs) > self.max_batch + self.max_queue:
                raise QueueFull(f"the server is busy: {len(self._live) + self._joining} rows decoding (--max-batch "
                                f"{self.max_batch}) and {len(self._waiting)} requests waiting (--max-queue "
                                f"{self.max_queue}); retry later")
            self._waiting.extend(jobs)
            self._cv.notify()

    def close(self) -> None:
        """Take no new jobs; those here run on (the drain)."""
        with self._cv:
            self._closed = True

    def abort(self) -> None:
        """End every live and waiting job now, as "abort" (the drain ran out of time); the engine thread
        does it between steps."""
        with self._cv:
            self._abort = True
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job, waiting or live (its row leaves at the next step)."""
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                job.ended = job.ended or "cancelled"
                self.cancelled += 1
                return
            self._cancels.append(job)
            self._cv.notify()

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the engine thread -------------------------------------------------------------------------

    def _run(self) -> None:
        batch = self.dec.batch(self.settings)
        while True:
            with self._cv:
                while not (self._stopping or self._waiting or self._live or self._cancels or self._abort):
                    self._cv.wait()
                if self._stopping:
                    break
                if self._abort:
                    self._abort = False
                    self._end_all(batch, "abort")
                room = self.max_batch - batch.live if batch.accepts_rows else 0  # else: drain, then a fresh batch
                joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                self._joining = len(joining)
                cancels, self._cancels = self._cancels, []
            if joining:
                self._admit(batch, joining)
                with self._cv:
                    self._joining = 0
            for job in cancels:  # after admission: a job cancelled while it was joining leaves too
                if job.key is not None and job.key in self._live:
                    batch.cancel(job.key)
            if not batch.live:
                self._collect(batch.finished())
                continue
            batch.keep_distributions = any(j.logprobs is not None for j in self._live.values())
            try:
                done = batch.step()
                made = batch.new_tokens()
                dists = batch.distributions() if batch.keep_distributions else {}
            except Exception as e:  # the batch is unusable: fail its rows, start a fresh one, keep serving
                log.exception("decoding step failed")
                for job in self._live.values():
                    job.fail(f"decoding failed: {type(e).__name__}: {e}")
                self._live.clear()
                batch = self.dec.batch(self.settings)
                continue
            for key, token in made:
                job = self._live.get(key)
                if key in dists and job is not None and job.logprobs is not None:
                    job.add_logprobs(token, *dists[key])
                if self.metrics is not None and job is not None and job.ended is None:
                    self.metrics.tokens.inc()
                if job is not None and job.add_token(token):
                    batch.cancel(key)  # a stop string: its row leaves at the next step
            self._collect(done)
        # shutting down: end everything still here
        for job in list(self._live.values()) + list(self._waiting):
            if job.ended is None:
                job.end("cancelled")
        self._live.clear()
        self._waiting.clear()

    def _end_all(self, batch: DecodeBatch, reason: str) -> None:
        """(lock held) End every job now; live rows leave the batch at the next step."""
        for job in list(self._waiting):
            job.end(reason)
            self.cancelled += 1
        self._waiting.clear()
        for key, job in self._live.items():
            if job.ended is None:
                job.end(reason)
            batch.cancel(key)

    def _admit(self, batch: DecodeBatch, jobs: list[Job]) -> None:
        try:
            keys = batch.admit([j.request for j in jobs])
        except Exception:
            if len(jobs) == 1:
                log.exception("request %s could not join the batch", jobs[0].id)
                jobs[0].fail("the request could not be prefilled (see the server log)")
                return
            for job in jobs:  # find the one at fault; the others join alone
                self._admit(batch, [job])
            return
        for key, job in zip(keys, jobs):
            job.key = key
            self._live[key] = job

    def _collect(self, done: list[tuple[int, DecodeResult]]) -> None:
        for key, result in done:
            job = self._live.pop(key, None)
            if job is None:
                continue
            job.finish(result)
            self.served += 1
            self.cancelled += job.ended in ("cancelled", "abort")
            elapsed = (job.finished_at or time.perf_counter()) - job.submitted
            names = ",".join(f"{p.name}={p.weight:g}" for p in job.request.principles) or "-"
            log.info("%s principles=%s prompt_tokens=%d tokens=%d finish=%s seconds=%.2f", job.id, names,
                     job.prompt_tokens, len(job.tokens), job.ended, elapsed)
