"""`GET /metrics`: what a Prometheus scrape of `pad serve` reads. One registry per service, so that several
servers in one process (tests, benchmarks) keep their own counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: a tiny model on a CPU answers in milliseconds, a large one on a busy batch in tens of seconds
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("pad_requests", "HTTP requests answered, by route and status", ["path", "status"],
                                registry=r)
        self.waiting = Gauge("pad_queue_length", "requests (choices) waiting for a row", registry=r)
        self.live = Gauge("pad_live_rows", "rows decoding in the batch", registry=r)
        self.tokens = Counter("pad_generated_tokens", "tokens generated", registry=r)
        self.ttft = Histogram("pad_time_to_first_token_seconds", "from a request's arrival to its first token",
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("pad_time_per_output_token_seconds", "mean time between a row's tokens after its first",
                              buckets=TPOT_BUCKETS, registry=r)

    def watch(self, worker) -> None:
        """Read the queue and the batch from the worker at each scrape."""
        self.waiting.set_function(lambda: worker.waiting)
        self.live.set_function(lambda: worker.live)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def finished(self, job) -> None:
        if job.first_token is not None and job.finished_at is not None and job.count > 1:
            self.tpot.observe((job.finished_at - job.first_token) / (job.count - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
