"""Loading what `pad serve` serves, and running it under uvicorn (in the foreground, or in a thread for
tests and benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pad.decode.config import DecodeConfig
from pad.decode.engine import SamplingSettings
from pad.errors import PadError
from pad.serve.api import Service, create_app
from pad.serve.decoder import ServeDecoder
from pad.serve.worker import Worker

log = logging.getLogger("pad.serve")


def build_service(cfg: DecodeConfig, max_batch: int = 8, max_queue: int = 64, max_tokens: int = 1024,
                  name: str | None = None, models=None, api_key: str | None = None, max_body: int = 1 << 20,
                  profiles: str | os.PathLike | None = None) -> Service:
    """Load the models of `cfg` (or take loaded `models`) and wrap one decoder in a worker.

    Without a PersRM (another base and no --rm) the server still serves vanilla answers."""
    from pad.decode.run import Models
    from pad.serve.metrics import Metrics

    for opt, v in (("max_batch", max_batch), ("max_queue", max_queue), ("max_tokens", max_tokens),
                   ("max_body", max_body)):
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
    decoder = ServeDecoder(models.base, models.tok, models.rm, models.rm_tok, template=cfg.template,
                           reference=cfg.reference, base_sees_principles=cfg.base_sees_principles,
                           cross_tokenizer=cfg.cross_tokenizer)
    settings = SamplingSettings(topk=cfg.topk, mode=cfg.mode, temperature=cfg.temperature,
                                max_new_tokens=min(cfg.max_new_tokens, max_tokens), seed=cfg.seed)
    if api_key is not None and not api_key.strip():
        raise PadError("--api-key is empty")
    if profiles is not None and not Path(profiles).is_dir():
        raise PadError(f"--profiles {str(profiles)!r} is not a folder")
    metrics = Metrics()
    worker = Worker(decoder, settings, max_batch=max_batch, max_queue=max_queue, metrics=metrics)
    return Service(decoder, worker, cfg, name or cfg.llm, max_tokens, api_key=api_key, max_body=max_body,
                   metrics=metrics, profiles=Path(profiles) if profiles is not None else None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell the user who serves beyond this machine without a key (None: nothing)."""
    if api_key is None and not is_loopback(host):
        return (f"serving on {host} without an API key: anyone who can reach the port can use it "
                "(set --api-key or PAD_API_KEY)")
    return None


def _uvicorn_server_class():
    import uvicorn

    class PadServer(uvicorn.Server):
        """uvicorn's server with pad's drain: on a signal, stop taking requests, let live ones run for up to
        `drain_seconds`, then end each with a well-formed answer (503, or a stream's final chunk) before
        uvicorn's own deadline cancels the handlers mid-body. SIGTERM then returns like Ctrl-C, so `pad serve`
        exits 0 after the drain either way."""

        drain_seconds = 30.0
        service: Service

        async def shutdown(self, sockets=None):
            self.service.worker.close()
            timer = asyncio.get_running_loop().call_later(self.drain_seconds, self.service.worker.abort)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    self.signals = list(self._captured_signals)
                    self._captured_signals.clear()  # uvicorn would raise them again: SIGTERM would kill us

    return PadServer


def uvicorn_server(svc: Service, host: str = "127.0.0.1", port: int = 8000, drain_seconds: float = 30.0,
                   access_log: bool = False):
    import uvicorn

    # uvicorn's deadline comes a little after pad's, for the handlers to write their last words
    config = uvicorn.Config(create_app(svc), host=host, port=port, log_level="warning", access_log=access_log,
                            timeout_graceful_shutdown=drain_seconds + 5, lifespan="on")
    server = _uvicorn_server_class()(config)
    server.drain_seconds, server.service = drain_seconds, svc
    return server


def serve(svc: Service, host: str = "127.0.0.1", port: int = 8000, drain_seconds: float = 30.0) -> None:
    """Serve until Ctrl-C or SIGTERM: then stop taking requests, let live ones finish for up to
    `drain_seconds`, end what is left with a well-formed answer, and return."""
    warning = exposure_warning(host, svc.api_key)
    if warning:
        log.warning(warning)
    server = uvicorn_server(svc, host, port, drain_seconds)
    try:
        server.run()
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
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
def running_server(svc: Service, host: str = "127.0.0.1", port: int | None = None,
                   drain_seconds: float = 5.0) -> Iterator[str]:
    """Serve `svc` from a thread on a loopback port; yields the base URL ("http://127.0.0.1:PORT")."""
    import time

    port = port or free_port(host)
    server = uvicorn_server(svc, host, port, drain_seconds=drain_seconds)
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
