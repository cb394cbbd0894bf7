"""Random-weight models shaped like real ones (Qwen2.5 0.5B, 1.5B, 7B), for load and throughput checks without a
download, and the memory each stored token takes for a shape.

Weights are random, so answers mean nothing; shapes, memory and speed are those of the real models. The
tokenizer is the byte-level one from tiny.py (its ids fit any vocabulary).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from l2m_core.loading import kv_geometry
from l2m_core.tiny import byte_tokenizer

# name -> Qwen2 config fields (from the published Qwen2.5 configs); "ci" is the same family, small enough for tests
SHAPES: dict[str, dict] = {
    "ci": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def shaped_config(name: str) -> Qwen2Config:
    return Qwen2Config(**SHAPES[name], max_position_embeddings=32768, rope_theta=1000000.0, bos_token_id=0,
                       eos_token_id=2, pad_token_id=0)


def random_model(name: str, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 seed: int = 0) -> PreTrainedModel:
    """A model of shape `name` with random weights, built directly in `dtype` on `device`."""
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(shaped_config(name), dtype=dtype).eval()


def save_random_model(name: str, directory: str | Path, dtype: torch.dtype = torch.float32,
                      device: str | torch.device = "cpu") -> Path:
    """Write a random model of shape `name` (weights in `dtype`) and the byte tokenizer as a model directory."""
    directory = Path(directory)
    random_model(name, dtype, device).save_pretrained(directory)
    byte_tokenizer().save_pretrained(directory)
    return directory


def kv_bytes_per_token(config, bytes_per_number: float) -> float:
    """Keys and values of one token in every layer: layers * 2 * kv_heads * head_dim numbers."""
    kv_heads, head_dim = kv_geometry(config)
    return config.num_hidden_layers * 2 * kv_heads * head_dim * bytes_per_number


def parameters(config) -> int:
    """Weights of a shape without building it (on the meta device)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
