"""The mixing buffer's position on the consumer's side: the reader hands out batches that the batch thread made
ahead, so it keeps its own copy of the state right after the last batch it returned (see train/mixing.py)."""

from __future__ import annotations

import numpy as np
import torch


class Position:
    """The mixer's state right after the last batch handed out, kept on the consumer's side: built from a full
    state dict, advanced by each batch's ``Mixer.snapshot()`` (however far the batch thread has run ahead)."""

    def __init__(self, state: dict):
        self.scalars = {
            k: state[k] for k in ("epoch", "round", "cursor", "exhausted", "finished", "tokens_emitted")
        }
        self.pending, self.pos = np.asarray(state["pending"], np.int64), 0
        self.slot_ids = np.asarray(state["slot_ids"], np.int64).copy()  # [B] mirror of the mixer's

    def advance(self, snap: dict) -> None:
        for slots, ids in snap["delta"]:
            self.slot_ids[slots] = ids
        self.scalars, self.pending, self.pos = snap["scalars"], snap["pending"], snap["pos"]

    def finish(self) -> None:
        """The last epoch is over: nothing pending."""
        self.scalars = dict(self.scalars, finished=True)
        self.pending, self.pos = np.zeros(0, np.int64), 0

    @property
    def remaining(self) -> int:
        return len(self.pending) - self.pos

    def state_dict(self) -> dict:
        """The full state (copies): what Mixer.state_dict() returned at this position."""
        return {
            **self.scalars,
            "pending": torch.from_numpy(self.pending[self.pos :].copy()),
            "slot_ids": torch.from_numpy(self.slot_ids.copy()),
        }
