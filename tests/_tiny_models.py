"""Tiny random-init Llama and Qwen2 causal LMs (fixed seed) for harvest tests.

`build_tiny_model(kind, vocab_size=...)` returns the model in memory; `save_tiny_model(kind, dir, tokenizer)`
writes it with the tokenizer so that `--model <dir>` loads it like any hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("llama", "qwen2")


def tiny_config(kind: str, *, vocab_size: int = 512, num_layers: int = 4):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if kind == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if kind == "qwen2":
        # Sliding window on the upper half of the layers: the window must not see padding either.
        return Qwen2Config(
            **common,
            use_sliding_window=True,
            sliding_window=16,
            max_window_layers=num_layers // 2,
            rope_theta=10000.0,
        )
    raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {KINDS}")


def build_tiny_model(
    kind: str, *, vocab_size: int = 512, num_layers: int = 4, seed: int = 0, attn_implementation: str = "sdpa"
):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(kind, vocab_size=vocab_size, num_layers=num_layers)
    config._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random init has tiny weights; scale up so layers change the stream visibly
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
    return model.eval()


def save_tiny_model(kind: str, out_dir: str | Path, tokenizer, *, num_layers: int = 4, seed: int = 0) -> Path:
    out_dir = Path(out_dir)
    vocab = len(tokenizer)
    model = build_tiny_model(kind, vocab_size=vocab, num_layers=num_layers, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_tokenizer(kind: str):
    """The tiny chat tokenizer that goes with a tiny model kind (tests/_tiny_tokenizers.py)."""
    from tests._tiny_tokenizers import llama3_tokenizer, qwen2_tokenizer

    return {"llama": llama3_tokenizer, "qwen2": qwen2_tokenizer}[kind]()
