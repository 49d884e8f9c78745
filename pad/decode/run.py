"""A whole `pad decode` run: load the models once, decode prompt rows in batches, write as it goes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pad.decode.config import DecodeConfig
from pad.decode.engine import DecodeRequest, DecodeResult, PADDecoder, SamplingSettings
from pad.decode.io import PromptRow, RunWriter
from pad.errors import PadError

log = logging.getLogger("pad.decode")


@dataclass
class RunSummary:
    path: Path | None
    written: int = 0
    skipped_done: int = 0  # already in the file (resume)
    too_long: int = 0  # prompts longer than the context, recorded as skipped
    tokens: int = 0
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Models:
    """The loaded base model, PersRM and tokenizers, shared by every run of one invocation."""

    def __init__(self, cfg: DecodeConfig, need_rm: bool):
        from pad.models import load_causal_lm, load_tokenizer, read_pad_config, resolve_device, resolve_dtype

        device = resolve_device(cfg.device)
        self.base = load_causal_lm(cfg.llm, device, resolve_dtype(cfg.dtype, device))
        self.tok = load_tokenizer(cfg.llm)
        self.rm = self.rm_tok = None
        self.rm_spec = None
        spec = cfg.rm
        if spec is None:
            try:
                spec = default_persrm(cfg.llm)
            except PadError:
                if need_rm:
                    raise
        # The reference shows the base the principles too, unless the PersRM's pad_config.json advises
        # otherwise; read even when no principle weighs anything, so that w = 0 equals vanilla decoding.
        hint = ((read_pad_config(spec) or {}).get("decode") or {}).get("base_sees_principles") if spec else None
        self.base_sees_principles = hint if isinstance(hint, bool) else True
        if need_rm:
            rm_device = resolve_device(cfg.rm_device or cfg.device)
            self.rm = load_causal_lm(spec, rm_device, resolve_dtype(cfg.rm_dtype or cfg.dtype, rm_device))
            self.rm_tok = load_tokenizer(spec)
            self.rm_spec = str(spec)


def default_persrm(llm: str) -> str:
    """The PersRM shipped with pad for the default base model."""
    from pad.models import DEFAULT_BASE

    shipped = Path(__file__).resolve().parents[1] / "assets" / "persrm-smollm2-135m"
    if llm == DEFAULT_BASE and (shipped / "adapter_config.json").is_file():
        return str(shipped)
    raise PadError("principles need a PersRM: pass --rm (a merged checkpoint or a LoRA adapter folder)")


def needs_rm(cfg: DecodeConfig, rows: list[PromptRow]) -> bool:
    defaults = cfg.parsed_principles()
    return any(p.weight != 0 for r in rows for p in (r.principles if r.principles is not None else defaults))


def batches(rows: list[PromptRow], size: int) -> Iterator[list[PromptRow]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def record(row: PromptRow, res: DecodeResult, principles, cfg: DecodeConfig, run: str, rm_spec) -> dict:
    settings = cfg.settings_record(run)
    settings["rm"] = rm_spec if any(p.weight != 0 for p in principles) else None
    return {
        "id": row.id,
        "prompt": row.prompt,
        "principles": [{"name": p.name, "weight": p.weight} for p in principles],
        "model_input": res.model_input,
        "persrm_inputs": res.persrm_inputs,
        "response": res.text,
        "settings": settings,
        "tokens": len(res.token_ids),
        "finish_reason": res.finish_reason,
        "seconds": round(res.seconds, 4),
    }


def decode_run(
    cfg: DecodeConfig,
    rows: list[PromptRow],
    models: Models,
    out: str | Path | None = None,
    run: str = "pad",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Decode `rows` under `cfg`, appending each finished batch to `out` (JSONL) if given."""
    from tqdm.auto import tqdm

    if cfg.base_sees_principles is None:
        cfg = replace(cfg, base_sees_principles=models.base_sees_principles)
    writer = RunWriter(out, resume=resume, overwrite=overwrite) if out is not None else None
    summary = RunSummary(Path(out) if out is not None else None)
    todo = rows
    if writer is not None and writer.done:
        todo = [r for r in rows if r.id not in writer.done]
        summary.skipped_done = len(rows) - len(todo)
    decoder = PADDecoder(models.base, models.tok, models.rm, models.rm_tok, template=cfg.template,
                         reference=cfg.reference, base_sees_principles=cfg.base_sees_principles)
    settings = SamplingSettings(topk=cfg.topk, mode=cfg.mode, temperature=cfg.temperature,
                                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    defaults = cfg.parsed_principles()
    bar = tqdm(total=len(todo), desc=run, unit="prompt", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for chunk in batches(todo, cfg.batch_size):
            principles = [r.principles if r.principles is not None else defaults for r in chunk]
            reqs = [DecodeRequest(r.prompt, p, r.id) for r, p in zip(chunk, principles)]

            def tick(n):
                summary.tokens += n
                elapsed = time.perf_counter() - t0
                bar.set_postfix_str(f"{summary.tokens / elapsed:.1f} tok/s" if elapsed > 0 else "", refresh=False)

            results = decoder.generate(reqs, settings, on_token=tick)
            recs = [record(r, res, p, cfg, run, models.rm_spec) for r, res, p in zip(chunk, results, principles)]
            for rec in recs:
                if rec["finish_reason"] == "skipped":
                    summary.too_long += 1
                    log.warning("prompt %s is longer than the model's context: skipped", rec["id"])
            if writer is not None:
                writer.write(recs)
            summary.records.extend(recs)
            summary.written += len(recs)
            bar.update(len(chunk))
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        if writer is not None:
            writer.close()
    return summary
