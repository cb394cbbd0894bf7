"""Tiny random models of every supported family and a byte-level tokenizer, built from code: the test suite's
models. Nothing is downloaded. The tokenizer maps each UTF-8 byte to one token (plus ChatML specials), so
character offsets are exact and any text round-trips.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token="<|endoftext|>", chat_template=CHAT_TEMPLATE,
    )


# family -> (config class, what makes it that family); windows are short so that tests cross them
TINY_FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {}),
    "llama3": ("LlamaConfig", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "mistral": ("MistralConfig", {"sliding_window": 48}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": True, "sliding_window": 48, "max_window_layers": 1}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "gemma": ("GemmaConfig", {"head_dim": 16}),
    "gemma2": ("Gemma2Config", {"head_dim": 16, "sliding_window": 48, "query_pre_attn_scalar": 24,
                                "attn_logit_softcapping": 2.0, "final_logit_softcapping": 5.0}),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 16, "sliding_window": 48, "query_pre_attn_scalar": 24,
                                    "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": ("Phi3Config", {"partial_rotary_factor": 0.5, "sliding_window": 48}),
    "olmo2": ("Olmo2Config", {}),
    "granite": ("GraniteConfig", {"attention_multiplier": 0.5, "residual_multiplier": 0.7,
                                  "embedding_multiplier": 2.0, "logits_scaling": 3.0}),
    "starcoder2": ("Starcoder2Config", {"sliding_window": 48}),
    "mixtral": ("MixtralConfig", {"sliding_window": 48, "num_local_experts": 2, "num_experts_per_tok": 1}),
    "qwen3_moe": ("Qwen3MoeConfig", {"head_dim": 16, "num_experts": 2, "num_experts_per_tok": 1,
                                     "moe_intermediate_size": 32}),
    "smollm3": ("SmolLM3Config", {"no_rope_layers": [1, 0]}),
}


def tiny_model(family: str = "llama", seed: int = 0, layers: int = 2, hidden: int = 64, heads: int = 4,
               kv_heads: int = 2, max_positions: int = 512, vocab_size: int | None = None) -> PreTrainedModel:
    """A tiny random model of `family` (a key of TINY_FAMILIES) for the byte tokenizer, in eval mode."""
    name, extra = TINY_FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, name)(
        vocab_size=vocab_size or len(byte_tokenizer()), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, bos_token_id=0, eos_token_id=2,
        pad_token_id=0, **extra)
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_llama(seed: int = 0, **kwargs) -> LlamaForCausalLM:
    return tiny_model("llama", seed, **kwargs)


def save_tiny_model(directory: str | Path, seed: int = 0, family: str = "llama", **kwargs) -> Path:
    """Write a tiny model and its tokenizer as a Hugging Face directory (`--model DIR` in CLI tests)."""
    directory = Path(directory)
    tiny_model(family, seed, **kwargs).save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory
