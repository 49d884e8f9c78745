"""Load on `pad serve`: 1, 4 and 16 concurrent clients, each with its own principles, against the same
prompts decoded offline in static batches.

Starts `pad serve` in its own process on a loopback port, then drives it from this process with asyncio
clients (httpx, streaming, so the first token's time is seen). Each client sends `--requests` requests one
after another, so every run is bounded. Client c asks with principle concise / harmless / humor (c mod 3) at
weight 0.5, 1.0 or 1.5 (c mod 3 again); requests are greedy, k = 10. Reported per concurrency level:
requests/s and tokens/s over the level's wall time, latency p50/p95 (request sent to its last event) and
time to first token p50/p95. "offline static" decodes the same requests in the process after the server
has stopped, in static batches of the level's size (`PADDecoder.generate`), for comparison; "ratio" is the
server's tokens/s over the offline's.

    python benchmarks/serve_load.py                               # tiny fixtures
    python benchmarks/serve_load.py --models smollm2 --json benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from continuous_batching import prompts_for  # noqa: E402
from decode_speed import model_specs  # noqa: E402

TURNS = ["concise", "harmless", "humor"]


def client_principles(c: int) -> list[dict]:
    return [{"name": TURNS[c % 3], "weight": 0.5 + 0.5 * (c % 3)}]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def one_request(http, url: str, body: dict) -> dict:
    t0 = time.perf_counter()
    first, tokens, reason, text = None, 0, None, []
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                tokens = obj["usage"]["completion_tokens"]
            for ch in obj.get("choices", []):
                if ch["delta"].get("content"):
                    text.append(ch["delta"]["content"])
                    if first is None:
                        first = time.perf_counter() - t0
                reason = ch.get("finish_reason") or reason
    total = time.perf_counter() - t0
    return {"latency": total, "ttft": first if first is not None else total, "tokens": tokens, "finish": reason,
            "text": "".join(text)}


async def drive(url: str, model: str, prompts: list, clients: int, per_client: int, max_tokens: int):
    import httpx

    async def client(c: int, http) -> list[dict]:
        out = []
        for j in range(per_client):
            prompt = prompts[(c * per_client + j) % len(prompts)]
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
                    "principles": client_principles(c)}
            out.append(await one_request(http, url, body))
        return out

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
    return [r for rs in results for r in rs], wall


def start_server(base: str, rm: str, port: int, max_batch: int, threads: int, device: str) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "pad.cli", "serve", "--llm", base, "--rm", rm, "--port", str(port), "--name", "bench",
           "--max-batch", str(max_batch), "--max-queue", "256", "--device", device]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"pad serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok":
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("pad serve did not start in 120 s")


def offline_static(base: str, rm: str, prompts: list, clients: int, per_client: int, max_tokens: int, device: str):
    """The same requests, decoded in this process in static batches of `clients` rows."""
    from pad.decode import DecodeRequest, PADDecoder, SamplingSettings
    from pad.decode.config import DecodeConfig
    from pad.decode.run import Models
    from pad.principles import Principle

    models = Models(DecodeConfig(llm=base, rm=rm, device=device), need_rm=True)
    dec = PADDecoder(models.base, models.tok, models.rm, models.rm_tok, base_sees_principles=models.base_sees_principles)
    reqs = []
    for c in range(clients):
        ps = [Principle(p["name"], p["weight"]) for p in client_principles(c)]
        for j in range(per_client):
            reqs.append(DecodeRequest([{"role": "user", "content": prompts[(c * per_client + j) % len(prompts)]}], ps))
    s = SamplingSettings(max_new_tokens=max_tokens)
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(reqs), clients):
        results += dec.generate(reqs[i:i + clients], s)
    return sum(len(r.token_ids) for r in results), time.perf_counter() - t0, [r.text for r in results]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, help="requests per client (default: 4 tiny, 2 smollm2)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-batch", type=int, default=16, help="the server's --max-batch")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the server (and of the offline run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-offline", action="store_true", help="skip the offline static batches")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    per_client = args.requests or (4 if args.models == "tiny" else 2)
    label, base, rm = model_specs(args.models)
    plabel, prompts = prompts_for(args.models, None)
    from pad.serve.server import free_port

    port = free_port()
    proc = start_server(base, rm, port, args.max_batch, args.threads, args.device)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        asyncio.run(drive(url, "bench", prompts, 1, 1, 8))  # warm-up
        for c in args.clients:
            res, wall = asyncio.run(drive(url, "bench", prompts, c, per_client, args.max_tokens))
            tokens = sum(r["tokens"] for r in res)
            lat, ttft = [r["latency"] for r in res], [r["ttft"] for r in res]
            rows.append({"clients": c, "requests": len(res), "seconds": round(wall, 2),
                         "requests_per_s": round(len(res) / wall, 3), "tokens_per_s": round(tokens / wall, 1),
                         "latency_p50": round(statistics.median(lat), 2), "latency_p95": round(pct(lat, 0.95), 2),
                         "ttft_p50": round(statistics.median(ttft), 3), "ttft_p95": round(pct(ttft, 0.95), 3),
                         "tokens": tokens, "texts": [r["text"] for r in res]})
    finally:
        proc.terminate()
        proc.wait(60)
    if not args.no_offline:
        import torch

        torch.set_num_threads(args.threads)
        for row in rows:
            tokens, secs, texts = offline_static(base, rm, prompts, row["clients"], per_client, args.max_tokens,
                                                 args.device)
            row["offline_static_tokens_per_s"] = round(tokens / secs, 1)
            row["same_answers"] = f"{sum(a == b for a, b in zip(row['texts'], texts))} of {len(texts)}"
            row["ratio"] = round(row["tokens_per_s"] / row["offline_static_tokens_per_s"], 2)
    print(f"{label}; pad serve --max-batch {args.max_batch}; {plabel}; {per_client} streaming requests per client, "
          f"greedy, up to {args.max_tokens} tokens; {args.device}, {args.threads} threads")
    print("\n| clients | requests | req/s | tokens/s | latency p50 / p95 (s) | first token p50 / p95 (s) "
          "| offline static batches, tokens/s | ratio | answers equal to offline |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests']} | {r['requests_per_s']} | {r['tokens_per_s']} | "
              f"{r['latency_p50']} / {r['latency_p95']} | {r['ttft_p50']} / {r['ttft_p95']} | "
              f"{r.get('offline_static_tokens_per_s', '-')} | {r.get('ratio', '-')} | {r.get('same_answers', '-')} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": label, "prompts": plabel, "per_client": per_client,
                                               "max_tokens": args.max_tokens, "max_batch": args.max_batch,
                                               "device": args.device, "threads": args.threads, "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
