"""The README's table of memory per model size, computed from config shapes (no weights are built):
layers * 2 * kv_heads * head_dim numbers per token; int8 as the codec stores it (scales included).

    python -m bench.kv_table
"""

from __future__ import annotations

import transformers as T

from l2m_core import codec
from l2m_core.loading import kv_geometry
from l2m_core.settings import MemorySettings
from l2m_core.shapes import kv_bytes_per_token, parameters, shaped_config


def published_configs() -> dict:
    """Shapes from the models' published configs (only the fields that size weights and memory)."""
    return {
        "SmolLM2-135M (default)": T.LlamaConfig(
            hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
        "Qwen2.5-0.5B": shaped_config("0.5B"),
        "Qwen2.5-1.5B": shaped_config("1.5B"),
        "Phi-3-mini (3.8B)": T.Phi3Config(
            hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=32064),
        "Qwen2.5-7B": shaped_config("7B"),
        "Mistral-7B": T.MistralConfig(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=32768),
        "Llama-3.1-8B": T.LlamaConfig(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128256),
        "Qwen3-8B": T.Qwen3Config(
            hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False),
        "Gemma-2-9B": T.Gemma2Config(
            hidden_size=3584, intermediate_size=14336, num_hidden_layers=42, num_attention_heads=16,
            num_key_value_heads=8, head_dim=256, vocab_size=256000),
    }


def rows() -> list[str]:
    block = MemorySettings().block_size
    lines = ["| model | layers x KV heads x head dim | parameters | weights in bf16 | per token, fp16 "
             "| per token, int8 (stored) | 1M tokens, int8 |", "|---|---|---|---|---|---|---|"]
    for name, config in published_configs().items():
        kv, head_dim = kv_geometry(config)
        count = parameters(config)
        int8 = 2 * config.num_hidden_layers * codec.encoded_size((block, kv, head_dim), "int8") / block
        lines.append(f"| {name} | {config.num_hidden_layers} x {kv} x {head_dim} | {count / 1e9:.2f} B "
                     f"| {2 * count / 2**30:.1f} GiB | {kv_bytes_per_token(config, 2) / 1024:.1f} KiB "
                     f"| {int8 / 1024:.1f} KiB | {int8 * 2**20 / 2**30:.1f} GiB |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
