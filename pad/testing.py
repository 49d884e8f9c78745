"""Tiny random models and an offline tokenizer, built in-process, for tests and benchmarks.

Nothing here touches a hub: the tokenizer is a byte-level BPE trained on a few sentences with the
`tokenizers` library and given a ChatML chat template; the models are 2-layer Llama and GPT-2
networks with random weights. Larger initial weights make the logits peaked, so greedy choices are
not decided by rounding noise.
"""

from __future__ import annotations

import os
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Your task is to generate response by considering the following principle.",
    "Guidelines Principles Instruction harmless helpfulness humor concise expert informal",
    "Human: How do I bake bread? Assistant: Mix flour, water, salt and yeast, then bake.",
    "I cannot help with that, but here is a safer idea. Why did the chicken cross the road?",
    "Tell me a joke about cats. Write a short poem. Explain gravity to a child in one sentence.",
    "0123456789 !?.,;:'\"()[]{}<>-_/\\|@#$%^&*+=~` \n\t",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def build_tokenizer(vocab_size: int = 320):
    """A fast byte-level BPE tokenizer with a chat template; it can encode any text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_causal_lm(tokenizer, arch: str = "llama", seed: int = 0, hidden: int = 32, layers: int = 2,
                    max_positions: int = 512, init_std: float = 0.4):
    """A tiny random causal LM whose vocabulary matches `tokenizer`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": init_std,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                             tie_word_embeddings=False, **common)
        model = LlamaForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=max_positions, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose llama or gpt2")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny_model(folder: str | os.PathLike, arch: str = "llama", seed: int = 0, tokenizer=None, **kw) -> Path:
    """Build and save a tiny model with its tokenizer; returns the folder."""
    folder = Path(folder)
    tokenizer = tokenizer or build_tokenizer()
    model = build_causal_lm(tokenizer, arch=arch, seed=seed, **kw)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_lora(base_folder: str | os.PathLike, folder: str | os.PathLike, seed: int = 1,
                   scale: float = 0.5) -> Path:
    """A LoRA adapter on a tiny model, with random (non-zero) B so it changes the logits."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    arch = base.config.model_type
    targets = ["q_proj", "v_proj", "up_proj"] if arch == "llama" else ["c_attn", "c_fc"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(folder)
    return Path(folder)
