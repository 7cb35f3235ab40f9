"""One clean forward per batch; each splice reruns only the blocks after its layer.

The clean pass captures, at every layer an SAE reads, the residual stream after that block (layer L,
see lm/layers.py), and, at every later block, the arguments the model's own forward handed it (causal and
sliding-window masks, rotary embeddings, position ids): a rerun from layer L calls blocks L+1.. with those
arguments and the edited residual, then the final norm and the LM head, so it is the model's own forward
from there on, for any architecture whose forward calls its blocks in order (every transformers decoder).
SAEs at different layers share the batch: one clean pass serves them all.

Batches are right-padded with an attention mask: a padded position never changes a real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fastsae.lm import ResidualHooks, decoder_blocks

PAD_TYPE = 255  # token type of padded positions (no TokenType has it)


@dataclass
class Batch:
    index: np.ndarray  # [B] evaluation-set index of each row
    input_ids: torch.Tensor  # [B, T] int64 (pad: 0)
    valid: torch.Tensor  # [B, T] bool
    types: torch.Tensor  # [B, T] int64 token types (PAD_TYPE on padding)

    @property
    def seq(self) -> torch.Tensor:  # [B, T] evaluation-set index of each position
        return torch.as_tensor(self.index, device=self.input_ids.device)[:, None].expand_as(self.input_ids)


def batches(sequences, *, batch_tokens: int, device) -> list[Batch]:
    """Length-sorted batches of at most `batch_tokens` padded tokens (a longer sequence goes alone)."""
    order = sorted(range(len(sequences)), key=lambda i: (-len(sequences[i].token_ids), i))
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * len(sequences[groups[-1][0]].token_ids) <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    out = []
    for g in groups:
        width = len(sequences[g[0]].token_ids)
        ids = np.zeros((len(g), width), np.int64)
        types = np.full((len(g), width), PAD_TYPE, np.int64)
        valid = np.zeros((len(g), width), bool)
        for r, i in enumerate(g):
            n = len(sequences[i].token_ids)
            ids[r, :n], types[r, :n], valid[r, :n] = sequences[i].token_ids, sequences[i].token_types, True
        out.append(
            Batch(
                index=np.asarray(g, np.int64),
                input_ids=torch.from_numpy(ids).to(device),
                valid=torch.from_numpy(valid).to(device),
                types=torch.from_numpy(types).to(device),
            )
        )
    return out


@dataclass
class CleanPass:
    logits: torch.Tensor  # [B, T, V]
    resid: dict  # layer -> [B, T, d] residual after that block
    block_args: dict  # block index -> (positional args after the hidden states, keyword args)


class Splicer:
    """The model, split at any layer: `clean(batch)` once, then `rerun(clean, layer, residual)` per splice."""

    def __init__(self, model, layers):
        self.model = model
        self.blocks = decoder_blocks(model)
        self.layers = sorted({int(L) for L in layers})
        base = getattr(model, "base_model", model)
        self.norm = getattr(base, "norm", None)
        self.head = model.get_output_embeddings()
        if self.norm is None or self.head is None:
            raise TypeError(
                f"{type(model).__name__}: expected base_model.norm and an LM head to rerun from a layer"
            )
        first = self.layers[0] + 1
        self.rerun_blocks = list(range(first, len(self.blocks)))

    @torch.no_grad()
    def clean(self, batch: Batch) -> CleanPass:
        args: dict = {}

        def keep(j):
            def pre_hook(module, a, kw):
                args[j] = (a[1:], dict(kw))

            return pre_hook

        handles = [
            self.blocks[j].register_forward_pre_hook(keep(j), with_kwargs=True) for j in self.rerun_blocks
        ]
        try:
            with ResidualHooks(self.model, capture=self.layers) as hooks:
                out = hooks(batch.input_ids, attention_mask=batch.valid.long())
        finally:
            for h in handles:
                h.remove()
        return CleanPass(logits=out.output.logits, resid=out.captured, block_args=args)

    @torch.no_grad()
    def rerun(self, clean: CleanPass, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] of the model with `resid` in place of the residual after block `layer`."""
        h = resid
        for j in range(layer + 1, len(self.blocks)):
            a, kw = clean.block_args[j]
            h = self.blocks[j](h, *a, **kw)
            if isinstance(h, tuple):
                h = h[0]
        return self.head(self.norm(h))

    @torch.no_grad()
    def residuals(self, batch: Batch) -> dict:
        """The residual at every layer of `self.layers`, stopping after the deepest block (no logits)."""
        with ResidualHooks(self.model, capture=self.layers, stop=True) as hooks:
            return hooks(batch.input_ids, attention_mask=batch.valid.long()).captured
