"""Loading what `pad serve` serves, and running it under uvicorn (in the foreground, or in a thread for
tests and benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

from pad.decode.config import DecodeConfig
from pad.decode.engine import PADDecoder, SamplingSettings
from pad.errors import PadError
from pad.serve.api import Service, create_app
from pad.serve.worker import Worker

log = logging.getLogger("pad.serve")


def build_service(cfg: DecodeConfig, max_batch: int = 8, max_queue: int = 64, max_tokens: int = 1024,
                  name: str | None = None, models=None) -> Service:
    """Load the models of `cfg` (or take loaded `models`) and wrap one decoder in a worker.

    Without a PersRM (another base and no --rm) the server still serves vanilla answers."""
    from pad.decode.run import Models

    for opt, v in (("max_batch", max_batch), ("max_queue", max_queue), ("max_tokens", max_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PadError(f"--{opt.replace('_', '-')} must be a whole number >= 1, got {v!r}")
    if models is None:
        try:
            models = Models(cfg, need_rm=True)
        except PadError as e:
            if cfg.rm is not None:
                raise
            log.warning("%s; serving the base model alone (requests with principles get 400)", e)
            models = Models(cfg, need_rm=False)
    if cfg.base_sees_principles is None:
        cfg = replace(cfg, base_sees_principles=models.base_sees_principles)
    decoder = PADDecoder(models.base, models.tok, models.rm, models.rm_tok, template=cfg.template,
                         reference=cfg.reference, base_sees_principles=cfg.base_sees_principles)
    settings = SamplingSettings(topk=cfg.topk, mode=cfg.mode, temperature=cfg.temperature,
                                max_new_tokens=min(cfg.max_new_tokens, max_tokens), seed=cfg.seed)
    worker = Worker(decoder, settings, max_batch=max_batch, max_queue=max_queue)
    return Service(decoder, worker, cfg, name or cfg.llm, max_tokens)


def uvicorn_server(svc: Service, host: str = "127.0.0.1", port: int = 8000, drain_seconds: float = 30.0,
                   access_log: bool = False):
    import uvicorn

    config = uvicorn.Config(create_app(svc), host=host, port=port, log_level="warning", access_log=access_log,
                            timeout_graceful_shutdown=drain_seconds, lifespan="on")
    return uvicorn.Server(config)


def serve(svc: Service, host: str = "127.0.0.1", port: int = 8000, drain_seconds: float = 30.0) -> None:
    """Serve until Ctrl-C: then stop taking requests, let live ones finish for up to `drain_seconds`,
    cancel what is left, and return."""
    server = uvicorn_server(svc, host, port, drain_seconds)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the captured Ctrl-C again once it has shut down
        pass
    finally:
        svc.worker.stop()
    if not server.started:
        raise PadError(f"could not start the server on {host}:{port} (is the port in use?)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(svc: Service, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve `svc` from a thread on a loopback port; yields the base URL ("http://127.0.0.1:PORT")."""
    import time

    port = port or free_port(host)
    server = uvicorn_server(svc, host, port, drain_seconds=5.0)
    thread = threading.Thread(target=server.run, name="pad-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise PadError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
