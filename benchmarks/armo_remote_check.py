"""Does pad's ArmoRM (pad/evaluate/armo.py) score exactly as ArmoRM's own remote code? Run once per change, under
transformers 4 (where that code still imports), with the checkpoint's `modeling_custom.py` from the hub cache:

    pip install --no-deps --target /tmp/t4 'transformers==4.46.3' 'huggingface_hub<1.0,>=0.23.2' 'tokenizers<0.21'
    PYTHONPATH=/tmp/t4:. python benchmarks/armo_remote_check.py --remote-code PATH/TO/modeling_custom.py

It builds a small random checkpoint of that architecture with the remote code (Llama 3's vocabulary size, so
the code's own Llama 3 token pattern is in range; a random reward transform and gate scale), saves it, loads it
back through `AutoModelForSequenceClassification(trust_remote_code=True)` and through pad's module, and prints
the largest differences of the 19 rewards and of the gated score on a right-padded batch. `--out FILE` also
saves the inputs and the remote code's outputs, for `--compare FILE` under transformers 5 (pad's own loader).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

PAD_ID, BOS, EOT = 128258, 128000, 128009


def build_checkpoint(remote_code: Path, folder: Path):
    import torch
    from transformers import LlamaConfig

    shutil.copy(remote_code, folder / "modeling_custom.py")
    spec = importlib.util.spec_from_file_location("armo_remote_code", folder / "modeling_custom.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # fails on transformers 5: LLAMA_INPUTS_DOCSTRING
    config = LlamaConfig(vocab_size=128260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=PAD_ID, bos_token_id=BOS, eos_token_id=EOT, initializer_range=0.2,
                         tie_word_embeddings=False)
    config.num_objectives, config.gating_temperature, config.gating_hidden_dim, config.gating_n_hidden = 19, 10, 64, 3
    torch.manual_seed(0)
    model = module.LlamaForRewardModelWithGating(config).eval()
    with torch.no_grad():  # every part of the score exercised: a live gate, a scale, a non-identity transform
        for p in model.gating.parameters():
            p.normal_(0, 0.3)
        model.gating.logit_scale.fill_(1.3)
        model.reward_transform_matrix.copy_(torch.eye(19) + 0.1 * torch.randn(19, 19))
    config.architectures = ["LlamaForRewardModelWithGating"]
    config.auto_map = {"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"}
    model.config = config
    model.save_pretrained(folder, safe_serialization=True)
    return module.token_pattern


def batch(pattern: list[int]):
    """Four chat-shaped rows (prompt, the reply-start pattern, reply, end of turn), right-padded: (4, T)."""
    import torch

    g = torch.Generator().manual_seed(1)
    rows = []
    for n_prompt, n_reply in ((5, 7), (9, 3), (2, 12), (6, 6)):
        prompt = torch.randint(0, BOS, (n_prompt,), generator=g).tolist()
        reply = torch.randint(0, BOS, (n_reply,), generator=g).tolist()
        rows.append([BOS, *prompt, *pattern, *reply, EOT])
    width = max(map(len, rows))
    return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remote-code", type=Path, help="ArmoRM's modeling_custom.py (transformers 4 only)")
    parser.add_argument("--out", type=Path, help="save the inputs and the remote code's outputs here")
    parser.add_argument("--compare", type=Path, help="a saved --out file: score it with pad's loader instead")
    parser.add_argument("--checkpoint", type=Path, help="where the checkpoint is (kept) or was written")
    args = parser.parse_args()
    if args.compare:
        from pad.evaluate.armo import load_armorm

        ref = torch.load(args.compare)
        with torch.no_grad():
            out = load_armorm(str(args.checkpoint), tokenizer=None)(input_ids=ref["ids"])
        print(f"transformers {transformers.__version__}: pad's loader against the remote code's saved outputs")
        print(f"max |rewards diff| {(out.rewards - ref['rewards']).abs().max().item():.3g}, "
              f"max |score diff| {(out.score - ref['score']).abs().max().item():.3g}")
        return
    from transformers import AutoModelForSequenceClassification

    from pad.evaluate.armo import ArmoRewardModel, reply_start_pattern

    folder = args.checkpoint or Path(tempfile.mkdtemp(prefix="armo-check-"))
    folder.mkdir(parents=True, exist_ok=True)
    pattern = build_checkpoint(args.remote_code, folder)
    ids = batch(pattern)
    remote = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    ours = ArmoRewardModel.from_pretrained(folder).eval()  # transformers 4 takes no dtype= (pad's loader passes one)
    ours.reply_start = reply_start_pattern(folder, ours.config, None)
    with torch.no_grad():
        theirs, mine = remote(input_ids=ids), ours(input_ids=ids)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; remote class "
          f"{type(remote).__module__}.{type(remote).__name__}; pad's gating pattern {ours.reply_start}")
    print(f"max |rewards diff| {(theirs.rewards - mine.rewards).abs().max().item():.3g} "
          f"(rewards up to {theirs.rewards.abs().max().item():.3g}), "
          f"max |score diff| {(theirs.score - mine.score).abs().max().item():.3g} "
          f"(scores {', '.join(f'{s:.4f}' for s in theirs.score.tolist())})")
    if args.out:
        torch.save({"ids": ids, "rewards": theirs.rewards, "score": theirs.score}, args.out)


if __name__ == "__main__":
    main()
