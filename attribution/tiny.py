"""Tiny random-initialised models and a byte-level tokenizer, for tests and demos.

Unit tests must not depend on downloaded weights, so they build small models
of each supported architecture (Llama, Qwen2, Qwen3, Gemma3) from configs,
with random weights and a 259-token byte-level tokenizer (256 bytes + BOS/EOS/PAD)
that needs no vocabulary file. `save_tiny_model` writes an ordinary Hugging Face
folder (config.json, model.safetensors, tokenizer files) that every loader in
the project accepts exactly like a real model folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3_text")
SPECIALS = ("<bos>", "<eos>", "<pad>")
VOCAB_SIZE = 256 + len(SPECIALS)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: every byte is one token, ids 0..255; specials after."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for name in SPECIALS:
        vocab[name] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def tiny_config(arch: str, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2):
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
        tie_word_embeddings=False,
    )
    if arch in ("qwen3", "gemma3_text"):
        kwargs["head_dim"] = hidden // heads
    if arch == "gemma3_text":
        kwargs["sliding_window"] = 16
        kwargs["query_pre_attn_scalar"] = hidden // heads
    return AutoConfig.for_model(arch, **kwargs)


def tiny_model(arch: str, *, seed: int = 0, **config_kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **config_kwargs), dtype=torch.float32)
    return model.eval()


def save_tiny_model(arch: str, out_dir: str | Path, *, seed: int = 0, **config_kwargs) -> Path:
    """Write a random tiny model of `arch` plus the byte tokenizer to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tiny_model(arch, seed=seed, **config_kwargs).save_pretrained(out, safe_serialization=True)
    byte_tokenizer().save_pretrained(out)
    return out
