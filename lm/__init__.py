"""fastsae.lm: the model floor. Imports no stage (store only, for TokenType); harvest and the analysis
stages use it.

- load.py      load_model / load_tokenizer (hub name, local folder, .gguf, the embedded default),
               load_store_tokenizer (the tokenizer a store recorded)
- embedded.py  the embedded default: SmolLM2-135M-Instruct Q4_1 GGUF, fetched once, pinned by sha256
- chat.py      chat rendering and per-token types taken from the template
- layers.py    layer L <-> SAELens hook name <-> HF decoder block <-> hidden_states index
- hooks.py     ResidualHooks: capture / replace / add on the residual stream, optional early stop
- devices.py   pick_device (torchrun-aware) and the CPU thread policy

The names below are importable from fastsae.lm directly; each module is imported on first use, so
`import fastsae.lm` stays cheap (no torch, no transformers).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "chat": (
        "ROLE_TYPES", "check_chat_template", "content_spans", "render", "special_ids", "template_hash",
        "tokenize_conversation", "tokenize_text",
    ),
    "devices": ("available_cores", "local_rank", "local_world_size", "pick_device", "set_threads"),
    "embedded": ("DEFAULT_MODEL", "GGUF_ENV", "cache_dir", "default_gguf_path", "sha256_file"),
    "errors": ("ChatTemplateError", "ModelLoadError", "TemplateRejectedError"),
    "hooks": ("HookedOutput", "ResidualHooks"),
    "layers": (
        "block_module", "block_module_name", "check_layers", "decoder_blocks", "hidden_states_index",
        "hook_name", "layer_of_hook",
    ),
    "load": (
        "LoadedModel", "hf_progress", "load_model", "load_store_tokenizer", "load_tokenizer", "resolve_dtype",
        "resolve_model",
    ),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fastsae.lm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fastsae.lm.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
