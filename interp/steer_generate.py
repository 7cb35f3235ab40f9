"""Prompts -> token ids and types (chat template with the generation prompt), then batched generation.

Rows are prompts × α. A batch is left-padded with an attention mask and generated with transformers'
generate and its KV cache, the Steering edit on the SAE's block (steer_hook.py); each row carries its own
coefficients and mask, so one batch mixes prompts and α freely. Greedy by default; with a temperature the
sampling is seeded per batch. Every knob of the decoding is set here, none taken from the model's own
generation config (no repetition penalty, top-k or length bonus the user did not ask for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fastsae.lm import ResidualHooks, render, special_ids, tokenize_conversation
from fastsae.store import TokenType


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict, ...]  # up to and including the last user turn
    source: str  # "<file>:<row>"
    ids: np.ndarray  # [T] int64, the chat template with the generation prompt
    types: np.ndarray  # [T] uint8 TokenType of each prompt token

    @property
    def instruction(self) -> str:
        return self.messages[-1]["content"]


def prompt_tokens(tokenizer, messages) -> tuple[np.ndarray, np.ndarray]:
    """(ids, types) of `messages` rendered with the generation prompt.

    The types of the conversation's own tokens are tokenize_conversation's; the tokens the generation
    prompt adds are TEMPLATE (the assistant header), or SPECIAL for special ids."""
    base_ids, base_types = tokenize_conversation(tokenizer, messages, max_tokens=1 << 30)
    rendered = render(tokenizer, messages)
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    n = len(base_ids)
    if text.startswith(rendered) and np.array_equal(ids[:n], base_ids):
        extra = np.full(len(ids) - n, TokenType.TEMPLATE, dtype=np.uint8)
        types = np.concatenate([base_types.astype(np.uint8), extra])
    else:  # a template whose generation prompt rewrites what comes before: types by character position
        char = np.full(len(text), TokenType.TEMPLATE, dtype=np.uint8)
        base_enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        for (s, e), t in zip(base_enc["offset_mapping"], base_types, strict=False):
            char[s : min(e, len(text))] = t
        types = np.array([char[min(s, len(text) - 1)] for s, _ in enc["offset_mapping"]], dtype=np.uint8)
    types[np.isin(ids, special_ids(tokenizer))] = TokenType.SPECIAL
    return ids, types


def conversation_prompt(messages) -> tuple[dict, ...] | None:
    """The conversation up to its last user turn (what the model answers), None without a user turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    return None if last is None else tuple(dict(m) for m in messages[: last + 1])


@dataclass(frozen=True)
class Row:
    prompt: int  # index into the prompts
    alpha: float | None  # None: the unsteered reference run
    values: tuple[float, ...]  # c per feature (α × coefficient)
    steered: bool


def stop_ids(model, tokenizer) -> list[int]:
    """End-of-response ids: the tokenizer's eos and the model's generation eos (ChatML's <|im_end|>, ...)."""
    ids = {getattr(tokenizer, "eos_token_id", None)}
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(gen) if isinstance(gen, (list, tuple)) else {gen}
    return sorted(i for i in ids if i is not None)


class _StepCounter:
    """A generate() streamer that only advances a progress bar, once per generated step."""

    def __init__(self, bar, task):
        self.bar, self.task, self.calls, self.steps = bar, task, 0, 0

    def put(self, value) -> None:
        self.calls += 1
        if self.calls > 1:  # the first put is the prompt
            self.steps += 1
            self.bar.advance(self.task)

    def end(self) -> None:
        pass


@dataclass
class Generation:
    tokens: list[np.ndarray]  # per row: the generated ids, up to and including the stop token
    ended: list[bool]  # per row: stopped by a stop token (not by the token limit)


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16

    def config(self, pad: int, stops: list[int], vocab: int):
        from transformers import GenerationConfig

        sample = self.temperature > 0
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens, min_new_tokens=0, do_sample=sample, num_beams=1,
            temperature=self.temperature if sample else 1.0, top_p=self.top_p if sample else 1.0,
            top_k=vocab if sample else None,  # no top-k cut (transformers' default is 50)
            repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad, eos_token_id=stops or None,
            bos_token_id=None, use_cache=True,
        )  # fmt: skip


def batches_of(rows: list[Row], prompts: list[Prompt], size: int) -> list[list[int]]:
    """Row indices in batches of `size`, longest prompts first (less padding per batch)."""
    order = sorted(range(len(rows)), key=lambda i: (-len(prompts[rows[i].prompt].ids), i))
    return [order[j : j + size] for j in range(0, len(order), size)]


def _left_pad(seqs: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad, dtype=np.int64)
    valid = np.zeros((len(seqs), width), dtype=bool)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :], valid[r, width - len(s) :] = s, True
    return ids, valid


@torch.no_grad()
def generate(
    model, tokenizer, prompts: list[Prompt], rows: list[Row], *, layer: int, steer, decoding: Decoding,
    bar=None, task=None,
) -> Generation:  # fmt: skip
    """Generate every row. `steer(rows, prompt_types [B, T] (255 on padding)) -> Steering` builds the edit
    of one batch."""
    device = next(model.parameters()).device
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    gen_config = decoding.config(pad, stops, int(model.config.vocab_size))
    tokens: list = [None] * len(rows)
    ended = [False] * len(rows)
    for b, batch in enumerate(batches_of(rows, prompts, decoding.batch_size)):
        ids, valid = _left_pad([prompts[rows[i].prompt].ids for i in batch], pad)
        types = np.full(ids.shape, 255, dtype=np.int64)
        for r, i in enumerate(batch):
            t = prompts[rows[i].prompt].types
            types[r, ids.shape[1] - len(t) :] = t
        steering = steer([rows[i] for i in batch], torch.from_numpy(types).to(device))
        if decoding.temperature > 0:
            torch.manual_seed(decoding.seed + b)
        streamer = _StepCounter(bar, task) if bar is not None else None
        with ResidualHooks(model, replace={layer: steering}):
            out = model.generate(
                input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(valid).long().to(device),
                generation_config=gen_config, streamer=streamer,
            )  # fmt: skip
        if bar is not None:  # a batch that stopped early still counts as its whole share
            bar.advance(task, decoding.max_new_tokens - streamer.steps)
        new = out[:, ids.shape[1] :].cpu().numpy()
        for r, i in enumerate(batch):
            hit = np.flatnonzero(np.isin(new[r], stops)) if stops else np.zeros(0, int)
            if hit.size:
                tokens[i], ended[i] = new[r, : hit[0] + 1], True
            else:
                tokens[i] = new[r]
    return Generation(tokens=tokens, ended=ended)


@torch.no_grad()
def response_nll(model, prompts: list[Prompt], rows: list[Row], tokens: list[np.ndarray], *, batch_size: int):
    """Per row: the summed NLL of its response tokens and their count, under the unsteered model
    (prompt + response in one right-padded forward; the mask keeps padding out)."""
    device = next(model.parameters()).device
    sums, counts = [0.0] * len(rows), [0] * len(rows)
    order = [i for i in range(len(rows)) if len(tokens[i])]
    for j in range(0, len(order), batch_size):
        batch = order[j : j + batch_size]
        seqs = [np.concatenate([prompts[rows[i].prompt].ids, tokens[i]]) for i in batch]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        valid = np.zeros((len(batch), width), dtype=bool)
        for r, s in enumerate(seqs):
            ids[r, : len(s)], valid[r, : len(s)] = s, True
        x = torch.from_numpy(ids).to(device)
        mask = torch.from_numpy(valid).long().to(device)
        logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, x[:, 1:, None])[..., 0].cpu().numpy()
        for r, i in enumerate(batch):
            start = len(prompts[rows[i].prompt].ids) - 1  # the position predicting the first response token
            part = nll[r, start : start + len(tokens[i])]
            sums[i], counts[i] = float(part.sum()), len(part)
    return sums, counts
