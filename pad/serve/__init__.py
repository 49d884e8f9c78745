"""`pad serve`: an OpenAI-compatible server where every request brings its own principles, batched
continuously over the one decoding engine (`pad.decode.engine.DecodeBatch`)."""

from pad.serve.api import BadRequest, Service, create_app, parse_chat
from pad.serve.server import build_service, running_server, serve
from pad.serve.worker import Job, QueueFull, ShuttingDown, Worker

__all__ = ["BadRequest", "Job", "QueueFull", "Service", "Worker", "build_service", "create_app", "parse_chat",
           "running_server", "serve", "ShuttingDown"]
