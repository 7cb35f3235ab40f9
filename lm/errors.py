"""The model floor's errors: each is a FastSAEError and the builtin a caller would catch."""

from __future__ import annotations

from fastsae.errors import FastSAEError


class ModelLoadError(FastSAEError, OSError):
    """The model or tokenizer could not be found, fetched or loaded."""


class ChatTemplateError(FastSAEError, ValueError):
    """The tokenizer cannot be used for conversation mode (no chat template, no offset mapping)."""


class TemplateRejectedError(FastSAEError, ValueError):
    """The chat template rejected one conversation (an unsupported role, a failed check, ...)."""

    reason = "template_rejected"

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")
