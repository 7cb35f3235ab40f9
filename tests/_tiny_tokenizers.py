"""Tiny chat tokenizers built locally and offline (no hub), cached per test session.

- ``llama3_tokenizer()``: byte-level BPE with Llama-3's pre-tokenizer, special tokens <|begin_of_text|>,
  <|start_header_id|>, <|end_header_id|>, <|eot_id|> and a Llama-3-like template (bos in the text, trimmed
  content, tool messages under an ``ipython`` header, other roles rejected).
- ``qwen2_tokenizer()``: a real ``Qwen2Tokenizer`` whose BPE was trained with Qwen2's own normalizer,
  pre-tokenizer and decoder, with <|im_start|>/<|im_end|> and a ChatML template that inserts a default
  system prompt and wraps tool messages in <tool_response> tags.

Both have vocabularies of ~800 tokens trained on a few KB of text; any text encodes (byte-level).
"""

from __future__ import annotations

from functools import lru_cache

VOCAB_SIZE = 800

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A good cook tastes the sauce before serving it.
Hello! How can I help you today? Could you explain how photosynthesis works in simple terms?
Plants turn sunlight, water and carbon dioxide into sugar and oxygen. The leaves hold chlorophyll.
Write a short poem about the sea. The waves roll in, the gulls cry out, the tide forgets the shore.
What is the capital of France? Paris is the capital of France, and it sits on the river Seine.
def add(a, b):\n    return a + b\n\nprint(add(2, 3))\nfor i in range(10):\n    print(i * i)
The function returns the sum of its two arguments. Use a list comprehension: [x * 2 for x in data].
I am sorry, but I cannot help with that request. Is there something else I can do for you?
To boil an egg, place it in boiling water for seven minutes, then cool it in cold water.
The train leaves at 9:45 and arrives at 13:20. Tickets cost 42 euros; students pay half price.
{"name": "get_weather", "arguments": {"city": "Lisbon", "unit": "celsius"}}
{"temperature": 21, "condition": "sunny", "humidity": 0.4}
The weather in Lisbon is sunny with a temperature of 21 degrees. You are a helpful assistant.
Please summarise the following paragraph in one sentence. The meeting was moved to Thursday.
Solve for x: 3x + 5 = 20. Subtract 5 from both sides, then divide by 3, so x = 5.
Travel tips: pack light, carry a reusable bottle, and keep copies of your documents.
Science is a way of asking questions about the world and testing the answers carefully.
User: thanks a lot! Assistant: you're welcome, it was my pleasure. Don't hesitate to ask again.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols + - * / = < > ( ) [ ] { } : ; , . ! ? ' " # @ % & _
Émile a mangé une crème brûlée à Zürich. Straße, naïve, café, 東京, 😀 — unicode is fine too.
"""

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{% endif %}"
    "{% set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{ '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a tiny test assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _train_bpe(normalizer, pre_tokenizer, special_tokens: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tok


@lru_cache(maxsize=1)
def llama3_tokenizer():
    """A Llama-3-style fast tokenizer (bos written by the chat template)."""
    from tokenizers import Regex, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ]
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend = _train_bpe(None, pre, specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"],
    )
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


@lru_cache(maxsize=1)
def qwen2_tokenizer():
    """A ``Qwen2Tokenizer`` (ChatML, tool role) with a tiny vocabulary trained with Qwen2's own pipeline."""
    import json

    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend = _train_bpe(normalizers.NFC(), pre, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(
        [AddedToken("<tool_response>", special=False), AddedToken("</tool_response>", special=False)]
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok
