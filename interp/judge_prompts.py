"""What the judge is asked and how its answers are read: the explanation prompt (the paper's Section 5 rubric)
and the detection prompt (delphi's detection scorer: the description plus a shuffled mix of activating and
non-activating texts, one 0/1 per text). Parsers are strict: JSON only (a code fence around it is
tolerated); anything else is a ValueError, which makes the client re-ask."""

from __future__ import annotations

import json
import re

import numpy as np

from fastsae.interp.feature_artifact import Context

MARK = ("<<", ">>")  # around the tokens on which the feature fires
# the paper's monosemanticity rubric, word for word from issue 13
RUBRIC = (
    ("5", "clear pattern with no deviating examples"),
    ("4", "clear pattern with one or two deviating examples"),
    ("3", "clear overall pattern but quite a few examples not fitting it"),
    ("2", "broad consistent theme but lacking structure"),
    ("1", "no discernible pattern"),
)
MAX_DESCRIPTION = 300  # characters kept of a description: one short sentence is asked for

EXPLAIN_SYSTEM = (
    "You are a meticulous interpretability researcher. You study one feature of a sparse autoencoder "
    "trained on the activations of a chat language model. You are shown the text around the tokens on "
    "which the feature activates most strongly; the tokens where it fires are marked <<like this>>. "
    "Chat-template tokens such as <|im_start|> are part of the text."
)
EXPLAIN_USER = """Feature {feature}: its {n} most strongly activating contexts (one per line, newlines shown as \\n).

{examples}

Describe in one short sentence what the feature responds to. Then rate how monosemantic it is:
{rubric}

Answer with a JSON object and nothing else: {{"description": "<one short sentence>", "score": <1-5>}}"""

DETECT_SYSTEM = (
    "You are a meticulous interpretability researcher. You are given the description of a feature of a "
    "language model and several text examples. Decide for each example whether the feature activates on "
    "some token of it, going by the description."
)
DETECT_USER = """Description: {description}

{examples}

Answer with a JSON array of {n} numbers, one per example in order: 1 if the feature activates on the example, \
0 if not. Nothing else."""


def _visible(text: str) -> str:
    return text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def render(tokenizer, ids: np.ndarray, fires: np.ndarray | None = None) -> str:
    """The window's text (special tokens kept, newlines and tabs made visible); with `fires` (a bool per
    token), each run of firing tokens is marked. Runs are decoded whole, so that characters spanning
    several byte-level tokens come out whole."""
    ids = [int(i) for i in ids]
    if fires is None:
        runs = [(False, ids)]
    else:
        runs = []
        for i, f in zip(ids, fires, strict=True):
            if runs and runs[-1][0] == bool(f):
                runs[-1][1].append(i)
            else:
                runs.append((bool(f), [i]))
    out = []
    for marked, run in runs:
        text = _visible(tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False))
        out.append(f"{MARK[0]}{text}{MARK[1]}" if marked else text)
    return "".join(out)


def context_text(tokenizer, ctx: Context, *, marked: bool) -> str:
    return render(tokenizer, ctx.ids, ctx.acts > 0 if marked else None)


def explain_messages(feature: int, examples: list[str]) -> list[dict]:
    rubric = "\n".join(f"{k}: {v};" for k, v in RUBRIC)
    lines = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(examples))
    user = EXPLAIN_USER.format(feature=feature, n=len(examples), examples=lines, rubric=rubric)
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": user}]


def detect_messages(description: str, examples: list[str]) -> list[dict]:
    lines = "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(examples))
    user = DETECT_USER.format(description=description, examples=lines, n=len(examples))
    return [{"role": "system", "content": DETECT_SYSTEM}, {"role": "user", "content": user}]


def _json(text: str):
    body = text.strip()
    if m := re.fullmatch(r"```[A-Za-z]*\s*\n?(.*?)\s*```", body, re.S):
        body = m.group(1).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at {e.pos}): {_clip(text)}") from None


def _clip(text: str, n: int = 80) -> str:
    one = " ".join(text.split())
    return repr(one if len(one) <= n else one[:n] + "...")


def parse_explanation(text: str) -> tuple[str, int]:
    """{"description": str, "score": 1..5} -> (description, score); anything else is a ValueError."""
    doc = _json(text)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}: {_clip(text)}")
    desc, score = doc.get("description"), doc.get("score")
    if not isinstance(desc, str) or not desc.strip():
        raise ValueError(f"no description: {_clip(text)}")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ValueError(f"score {score!r} is not a whole number 1-5")
    return " ".join(desc.split())[:MAX_DESCRIPTION], score


def detection_parser(n: int):
    """A parser of a JSON array of n answers, each 0/1 (or false/true) -> list[int]."""

    def parse(text: str) -> list[int]:
        doc = _json(text)
        if not isinstance(doc, list) or len(doc) != n:
            got = f"{len(doc)} items" if isinstance(doc, list) else type(doc).__name__
            raise ValueError(f"expected a JSON array of {n} answers, got {got}: {_clip(text)}")
        if not all(v in (0, 1) and not isinstance(v, float) for v in doc):
            raise ValueError(f"answers must be 0 or 1: {_clip(text)}")
        return [int(v) for v in doc]

    return parse
