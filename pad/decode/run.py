"""A whole `pad decode` run: load the models once, decode prompt rows in batches, write as it goes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from pad.decode.config import DecodeConfig
from pad.decode.engine import DecodeRequest, DecodeResult, PADDecoder, SamplingSettings
from pad.decode.io import PromptRow, RunWriter
from pad.errors import PadError
from pad.models import DEFAULT_BASE
from pad.parallel import World, complete_lines
from pad.principles import Principle

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
    """The loaded base model, PersRM and tokenizers, shared by every run of one invocation.

    Where the PersRM is a LoRA adapter on the very base model (`cfg.backbone` auto or shared), the base loads
    once and holds the adapter: base and PersRM rows then run in one forward (`backbone == "shared"`).
    Otherwise the PersRM loads as a second model, a LoRA adapter merged into its own copy of the base.
    `backbone_note` says why the shared path did not apply, where it did not.
    """

    def __init__(self, cfg: DecodeConfig, need_rm: bool):
        from pad.models import load_causal_lm, load_tokenizer, read_pad_config, resolve_device, resolve_dtype

        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype, device)
        self.tok = load_tokenizer(cfg.llm)
        if cfg.chat_template:
            from pad.principles import read_chat_template

            try:
                self.tok.chat_template = read_chat_template(cfg.chat_template, self.tok)
            except ValueError as e:
                raise PadError(f"--chat-template: {e}") from None
        elif not getattr(self.tok, "chat_template", None):
            log.warning("%s has no chat template: it reads plain transcripts (\"\\n\\nHuman: {principles and "
                        "prompt}\\n\\nAssistant:\"); pass --chat-template FILE to give it one", cfg.llm)
        self.rm = self.rm_tok = None
        self.rm_spec = None
        self.backbone, self.backbone_note = "none", None
        self._args: dict[tuple, object] = {}
        self._device, self._dtype = device, dtype
        spec = cfg.rm
        if spec == "shipped":  # the PersRM shipped with pad, whatever the base (another tokenizer: the cross path)
            spec = default_persrm(DEFAULT_BASE)
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
        if not need_rm:
            self.base = load_causal_lm(cfg.llm, device, dtype)
            return
        rm_device = resolve_device(cfg.rm_device or cfg.device)
        rm_dtype = resolve_dtype(cfg.rm_dtype or cfg.dtype, rm_device)
        self.rm_spec = str(spec)
        self.rm_tok = load_tokenizer(spec)
        self.base = load_causal_lm(cfg.llm, device, dtype)
        if cfg.backbone != "separate":
            reason = (shared_blocker(cfg.llm, spec, device, rm_device, dtype, rm_dtype)
                      or recorded_base_differs(self.base, cfg.llm, spec, device, dtype))
            if reason is None:
                from peft import PeftModel

                self.base = self.rm = PeftModel.from_pretrained(self.base, str(spec)).eval()
                self.backbone = "shared"
                return
            if cfg.backbone == "shared":
                raise PadError(f"--backbone shared cannot apply: {reason}")
            self.backbone_note = reason
        self.backbone = "separate"
        self.rm = load_causal_lm(spec, rm_device, rm_dtype)
        if hasattr(self.rm, "merge_and_unload"):
            # A second model anyway: fold the adapter in, so that a step costs a plain forward.
            self.rm = self.rm.merge_and_unload().eval()


    def args_guide(self, cfg: DecodeConfig):
        """ARGS's reward model for `cfg`, loaded once per invocation."""
        from pad.decode.args import ArgsGuide

        key = (cfg.reward_model, cfg.reward_path)
        if key not in self._args:
            self._args[key] = ArgsGuide(cfg.reward_model, self.tok, device=self._device, dtype=None,
                                        reward_path=cfg.reward_path)
            note = self._args[key].note
            log.info("ARGS reads %s %s%s", cfg.reward_model, self._args[key].path, f" ({note})" if note else "")
        return self._args[key]


def shared_blocker(llm: str, rm: str, device: str, rm_device: str, dtype, rm_dtype) -> str | None:
    """Why base and PersRM cannot share one backbone, from the settings alone (None: they may)."""
    from pad.models import is_adapter

    if not is_adapter(rm):
        kind = "a GGUF file" if str(rm).endswith(".gguf") else "a merged or standalone checkpoint"
        return f"the PersRM {rm} is {kind}, not a LoRA adapter folder"
    if rm_device != device:
        return f"the base is on {device} and the PersRM on {rm_device}"
    if rm_dtype != dtype:
        return f"the base runs in {str(dtype).removeprefix('torch.')} and the PersRM in {str(rm_dtype).removeprefix('torch.')}"
    return None


def recorded_base_differs(base, llm: str, adapter: str, device: str, dtype) -> str | None:
    """Whether the adapter's recorded base holds other weights than `base` (loaded from `llm`); None: the same.

    The same name loads the same weights. Under another name the recorded base is loaded and compared
    tensor by tensor, so a copy of the base in another folder still shares, and another model never does.
    """
    import torch

    from pad.models import adapter_base, load_causal_lm

    recorded = adapter_base(adapter)
    if recorded == llm or (Path(recorded).exists() and Path(llm).exists() and Path(recorded).resolve() == Path(llm).resolve()):
        return None
    try:
        other = load_causal_lm(recorded, device, dtype)
    except PadError as e:
        return f"the adapter records base {recorded!r}, which cannot be loaded to compare with {llm!r} ({e})"
    mine, theirs = base.state_dict(), other.state_dict()
    same = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    del other
    return None if same else f"the adapter was trained on {recorded!r}, whose weights differ from {llm!r}"


def default_persrm(llm: str) -> str:
    """The PersRM shipped with pad for the default base model."""
    shipped = Path(__file__).resolve().parents[1] / "assets" / "persrm-smollm2-135m"
    if llm == DEFAULT_BASE and (shipped / "adapter_config.json").is_file():
        return str(shipped)
    raise PadError("principles need a PersRM: pass --rm (a merged checkpoint or a LoRA adapter folder)")


def row_principles(row: PromptRow, cfg: DecodeConfig, defaults: list[Principle] | None = None) -> list[Principle]:
    """The principles that guide `row` under `cfg`: its own, or the run's; a weight it leaves open is the run's."""
    if row.principles is None:
        return defaults if defaults is not None else cfg.parsed_principles()
    return [p.with_default(cfg.weight) for p in row.principles]


def needs_rm(cfg: DecodeConfig, rows: list[PromptRow]) -> bool:
    if cfg.guide == "args" or cfg.baseline == "prompted":
        return False
    defaults = cfg.parsed_principles()
    return any(p.weight != 0 for r in rows for p in row_principles(r, cfg, defaults))


def record(row: PromptRow, res: DecodeResult, principles, cfg: DecodeConfig, run: str, rm_spec,
           backbone: str = "none", args=None, cross: str | None = None) -> dict:
    settings = cfg.settings_record(run)
    guided = args is None and any(p.weight != 0 for p in principles)
    settings["rm"] = rm_spec if guided else None
    settings["backbone"] = backbone if guided else None
    if guided and cross is not None:  # the PersRM read the base's candidates through its own tokenizer
        settings["cross_tokenizer"] = cross
    if args is not None:
        settings["reward_path"] = args.path
    rec = {
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
    if res.lambdas is not None:  # under a KL budget: how much of the guidance the row kept, on average
        rec["mean_lambda"] = sum(res.lambdas) / len(res.lambdas) if res.lambdas else None
        rec["mean_kl"] = sum(res.kls) / len(res.kls) if res.kls else None
    return rec


def decode_run(
    cfg: DecodeConfig,
    rows: list[PromptRow],
    models: Models,
    out: str | Path | None = None,
    run: str = "pad",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> RunSummary:
    """Decode `rows` under `cfg`, appending each finished row to `out` (JSONL) if given, in input order.

    Under several processes (`world`), each decodes its share into its own part file beside `out`
    (`OUT.parts/`), and the first merges the parts into `out`, in input order, once all are done."""
    from tqdm.auto import tqdm

    world = world or World()
    if world.size > 1:
        return _decode_run_parallel(cfg, rows, models, Path(out) if out is not None else None, run, resume,
                                    overwrite, progress, world)
    if out is not None and resume and parts_dir(Path(out)).is_dir():
        merge_parts(Path(out), rows)  # a run of several processes, resumed by one
    writer = RunWriter(out, resume=resume, overwrite=overwrite) if out is not None else None
    if overwrite and out is not None:
        shutil.rmtree(parts_dir(Path(out)), ignore_errors=True)
    summary = RunSummary(Path(out) if out is not None else None)
    todo = rows
    if writer is not None and writer.done:
        todo = [r for r in rows if r.id not in writer.done]
        summary.skipped_done = len(rows) - len(todo)
    bar = tqdm(total=len(todo), desc=run, unit="prompt", disable=not progress, dynamic_ncols=True)
    try:
        _decode_rows(cfg, todo, models, writer, run, summary, bar)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    return summary


def _decode_rows(cfg: DecodeConfig, todo: list[PromptRow], models: Models, writer: RunWriter | None, run: str,
                 summary: RunSummary, bar=None) -> None:
    """Decode `todo` with continuous batching; finished rows go to `writer` and `summary` in input order."""
    if cfg.baseline == "prompted":  # the principle prompt, read by the base alone
        cfg = replace(cfg, base_sees_principles=True)
    if cfg.base_sees_principles is None:
        cfg = replace(cfg, base_sees_principles=models.base_sees_principles)
    args = models.args_guide(cfg) if cfg.guide == "args" else None
    decoder = PADDecoder(models.base, models.tok, None if args else models.rm, models.rm_tok, template=cfg.template,
                         reference=cfg.reference, base_sees_principles=cfg.base_sees_principles, args=args,
                         args_weight=cfg.weight, cross_tokenizer=cfg.cross_tokenizer)
    settings = SamplingSettings(topk=cfg.topk, mode=cfg.mode, temperature=cfg.temperature,
                                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, kl_budget=cfg.kl_budget)
    defaults = cfg.parsed_principles()
    principles = [row_principles(r, cfg, defaults) for r in todo]
    if cfg.baseline == "prompted":
        principles = [[replace(p, weight=0.0) for p in ps] for ps in principles]
    reqs = [DecodeRequest(r.prompt, p, r.id) for r, p in zip(todo, principles)]
    t0 = time.perf_counter()

    def tick(n):
        summary.tokens += n
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.set_postfix_str(f"{summary.tokens / elapsed:.1f} tok/s" if elapsed > 0 else "", refresh=False)

    # Continuous batching: a row that finishes makes room for the next prompt at once. Finished rows are
    # written in input order, so the file is always the first rows of the input (a resume skips them).
    ready: dict[int, dict] = {}
    next_out = 0
    try:
        for i, res in decoder.stream(reqs, settings, max_live=cfg.batch_size, on_token=tick):
            ready[i] = record(todo[i], res, principles[i], cfg, run, models.rm_spec, decoder.backbone, args,
                              decoder.cross)
            if res.finish_reason == "skipped":
                summary.too_long += 1
                log.warning("prompt %s is longer than the model's context: skipped", todo[i].id)
            recs = []
            while next_out in ready:
                recs.append(ready.pop(next_out))
                next_out += 1
            if recs:
                if writer is not None:
                    writer.write(recs)
                summary.records.extend(recs)
                summary.written += len(recs)
            if bar is not None:
                bar.update(1)
    finally:
        summary.seconds = time.perf_counter() - t0


# -- several processes -----------------------------------------------------------------------------------

def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _part_files(out: Path) -> list[Path]:
    d = parts_dir(out)
    return sorted(d.glob("part-*.jsonl")) if d.is_dir() else []


def _ids(path: Path) -> set[str]:
    return {str(json.loads(line)["id"]) for line in complete_lines(path)}


def merge_parts(out: Path, rows: list[PromptRow]) -> list[dict]:
    """Fold `out` and every part file into `out`, each id once, in the order of `rows` (ids that are not
    among them after); then delete the parts. Returns the records. Written beside `out`, then moved over it,
    so a kill during the merge leaves the parts and the old `out` as they were."""
    lines: dict[str, str] = {}
    for src in [out, *_part_files(out)]:
        for line in complete_lines(src):
            lines.setdefault(str(json.loads(line)["id"]), line)
    order = [r.id for r in rows if r.id in lines]
    order += [i for i in lines if i not in set(order)]
    tmp = out.with_name(out.name + ".merging")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(lines[i] + "\n" for i in order))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    return [json.loads(lines[i]) for i in order]


class _PartsProgress:
    """The first process's progress bar over every process's part file (polled, as the others write)."""

    def __init__(self, out: Path, bar):
        self.out, self.bar = out, bar
        self.seen = {p: len(complete_lines(p)) for p in _part_files(out)}
        self.tokens = 0
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(0.5):
            self.update()

    def update(self):
        for p in _part_files(self.out):
            lines = complete_lines(p)
            new = lines[self.seen.get(p, 0):]
            self.seen[p] = len(lines)
            self.tokens += sum(json.loads(line).get("tokens", 0) for line in new)
            self.bar.update(len(new))
        elapsed = time.perf_counter() - self.t0
        self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s (all processes)" if elapsed > 0 else "")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.update()


def _decode_run_parallel(cfg: DecodeConfig, rows: list[PromptRow], models: Models, out: Path | None, run: str,
                         resume: bool, overwrite: bool, progress: bool, world: World) -> RunSummary:
    from tqdm.auto import tqdm

    if out is None:
        raise PadError(f"{world.size} processes need --out: each writes its part, and the parts are merged into it")
    had = (out.exists() and out.stat().st_size > 0) or any(p.stat().st_size for p in _part_files(out))
    if had and not resume and not overwrite:
        raise PadError(f"{out} exists: pass --resume to continue it or --overwrite to start over")
    world.barrier()  # every process has checked before the first one deletes anything
    if overwrite and world.main:
        out.unlink(missing_ok=True)
        shutil.rmtree(parts_dir(out), ignore_errors=True)
    world.barrier()
    done = _ids(out).union(*(_ids(p) for p in _part_files(out)))
    world.barrier()  # every process has read what is done before any writes more
    remaining = [r for r in rows if r.id not in done]
    mine = world.share(remaining)
    summary = RunSummary(out, skipped_done=len(rows) - len(remaining))
    writer = RunWriter(parts_dir(out) / f"part-{world.rank:03d}.jsonl", resume=True)
    bar = tqdm(total=len(remaining), desc=f"{run} ({world.size} processes)", unit="prompt",
               disable=not (progress and world.main), dynamic_ncols=True)
    mine_summary = RunSummary(None)
    watch = _PartsProgress(out, bar) if world.main and progress else contextlib.nullcontext()
    try:
        with watch:
            _decode_rows(cfg, mine, models, writer, run, mine_summary)
            writer.close()
            world.barrier()  # every part is complete
    finally:
        writer.close()
        bar.close()
    if world.main:
        new = [r for r in merge_parts(out, rows) if r["id"] not in done]
        summary.records, summary.written = new, len(new)
        summary.tokens = sum(r.get("tokens", 0) for r in new)
        summary.too_long = sum(r.get("finish_reason") == "skipped" for r in new)
        summary.seconds = mine_summary.seconds
    world.barrier()  # the others return once the run file is whole
    return summary


def gather_prompts(prompts: str | Path | None = None, dataset: str | None = None, prompt: list[str] | None = None,
                   limit: int | None = None) -> list[PromptRow]:
    """The prompt rows of one `pad decode` call: a prompts file, a built-in set and command-line prompts."""
    from pad.decode.io import load_dataset_prompts, load_prompts, rows_from_objects

    rows = []
    if prompts is not None:
        rows += load_prompts(prompts)
    if dataset is not None:
        rows += load_dataset_prompts(dataset)
    if prompt:
        rows += rows_from_objects([(f"--prompt {i + 1}", {"prompt": p, "id": f"cli-{i}"}) for i, p in enumerate(prompt)])
    return rows[:limit] if limit is not None else rows


def run_targets(out: Path | None, n_runs: int, from_run_lines: bool) -> list[tuple[str, Path | None]]:
    """(run name, run file) of each run: OUT itself, or OUT_0, OUT_1, ... for run-config lines."""
    name = out.stem if out is not None else "pad"
    if n_runs == 1 and not from_run_lines:
        return [(name, out)]
    return [(f"{name}_{i}", out.with_name(f"{name}_{i}{out.suffix}") if out is not None else None)
            for i in range(n_runs)]


@dataclass
class RunOutcome:
    name: str
    path: Path | None
    summary: RunSummary
    exported: tuple[Path, int] | None = None  # the reference-format JSON and its row count


def decode_runs(runs: list[DecodeConfig], rows: list[PromptRow], out: Path | None = None, from_run_lines: bool = False,
                resume: bool = False, overwrite: bool = False, export_json: Path | None = None,
                progress: bool = True, world: World | None = None) -> Iterator[RunOutcome]:
    """Load the models once and decode every run; yields each run's outcome as it ends.

    Under `accelerate launch` (world: this process's place, found from the environment by default) every
    process decodes its share of each run and only the first yields the outcomes."""
    from pad.decode.io import export_reference
    from pad.parallel import current_world

    if resume and overwrite:
        raise PadError("--resume and --overwrite contradict each other; pick one")
    world = world or current_world()
    if world.size > 1:
        runs = [replace(r, device=world.device(r.device), rm_device=world.device(r.rm_device) if r.rm_device else None)
                for r in runs]
    models = Models(runs[0], need_rm=any(needs_rm(r, rows) for r in runs))
    for i, (cfg, (name, path)) in enumerate(zip(runs, run_targets(out, len(runs), from_run_lines))):
        summary = decode_run(cfg, rows, models, path, run=name, resume=resume, overwrite=overwrite, progress=progress,
                             world=world)
        if not world.main:
            continue
        exported = None
        if path is not None and export_json is not None:
            target = export_json if len(runs) == 1 else export_json.with_name(f"{export_json.stem}_{i}.json")
            exported = (target, export_reference(path, target))
        yield RunOutcome(name, path, summary, exported)
