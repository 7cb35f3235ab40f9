"""What steering did to each response, and the sweet spot: the α where answers beat the unsteered ones.

Per response: its length in tokens, whether it hit the token limit, its perplexity under the unsteered
model, the share of its token 3-grams that are distinct (repetition loops drive it down), and a script
switch: the share of its letters written in another Unicode script than the prompt's main one.

"Beats" is a paired decision over the prompts, against the unsteered response to the same prompt:
- with a judge, a prompt wins at α when its judge score is higher, loses when lower;
- without one, it wins when its perplexity is lower and its distinct 3-gram share is not lower by more
  than REPEAT_SLACK (a repetition loop is cheap to predict: low perplexity alone would reward it); it
  loses when its perplexity is higher or its repetition got worse by more than that;
- α beats α = 0 when more prompts win than lose and the mean over prompts improves too (judge score:
  arithmetic mean; perplexity: geometric mean).
The sweet spot is every maximal run of consecutive swept α (in α order) that beats α = 0.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

import numpy as np

DISTINCT_N = 3
REPEAT_SLACK = 0.1


def distinct_share(ids, n: int = DISTINCT_N) -> float | None:
    """Distinct n-grams / n-grams of a token sequence; None when it has fewer than n tokens."""
    ids = [int(i) for i in ids]
    grams = [tuple(ids[j : j + n]) for j in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    word = name.split(" ", 1)[0]
    if word == "CJK":
        return "HAN"
    if word in ("FULLWIDTH", "HALFWIDTH", "MATHEMATICAL", "SMALL", "CIRCLED", "PARENTHESIZED"):
        rest = name.split(" ")
        return rest[1] if len(rest) > 1 else word
    return word or "UNKNOWN"


def scripts(text: str) -> Counter:
    """Letters of `text` counted by Unicode script (the first word of each letter's Unicode name)."""
    return Counter(_script(ch) for ch in text if unicodedata.category(ch).startswith("L"))


def main_script(text: str) -> str | None:
    counts = scripts(text)
    return counts.most_common(1)[0][0] if counts else None


def script_switch(prompt: str, response: str) -> float | None:
    """Share of the response's letters outside the prompt's main script; None if either has no letter."""
    want, got = main_script(prompt), scripts(response)
    total = sum(got.values())
    if want is None or total == 0:
        return None
    return 1.0 - got[want] / total


def perplexity(nll_sum: float, count: int) -> float | None:
    return math.exp(nll_sum / count) if count else None


def _mean(values, geometric: bool = False) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.exp(np.mean(np.log(vals)))) if geometric else float(np.mean(vals))


def quality_measure(records: list[dict]) -> str:
    """judge_score when every response has one, else perplexity."""
    judged = records and all(r.get("judge_score") is not None for r in records)
    return "judge_score" if judged else "perplexity"


def _outcome(measure: str, row: dict, ref: dict) -> int:
    """+1 win, -1 loss, 0 tie (or not comparable) for one prompt at one α."""
    a, b = row.get(measure), ref.get(measure)
    if a is None or b is None:
        return 0
    if measure == "judge_score":
        return (a > b) - (a < b)
    da, db = row.get("distinct_3"), ref.get("distinct_3")
    worse_repeat = da is not None and db is not None and da < db - REPEAT_SLACK
    if a > b or worse_repeat:
        return -1
    return 1 if a < b else 0


MEASURES = ("perplexity", "n_tokens", "distinct_3", "script_switch", "hit_limit", "judge_score")


def summarize(records: list[dict]) -> dict:
    """Per α (the reference first): the mean of each measure over prompts, and for the steered α the
    wins/losses against the reference and whether it beats it; then the sweet spot."""
    measure = quality_measure(records)
    ref = {r["prompt"]: r for r in records if r["reference"]}
    ref_mean = _mean([r.get(measure) for r in ref.values()], geometric=measure == "perplexity")
    groups: dict = {}
    for r in records:
        groups.setdefault(
            (not r["reference"], r["alpha"] if r["alpha"] is not None else -math.inf), []
        ).append(r)
    points = []
    for (_, _), rows in sorted(groups.items()):
        point = {"alpha": rows[0]["alpha"], "reference": rows[0]["reference"], "n": len(rows)}
        for m in MEASURES:
            vals = [float(r[m]) if isinstance(r.get(m), bool) else r.get(m) for r in rows]
            point[m] = _mean(vals, geometric=m == "perplexity")
        if not point["reference"]:
            outcomes = [_outcome(measure, r, ref[r["prompt"]]) for r in rows if r["prompt"] in ref]
            wins, losses = outcomes.count(1), outcomes.count(-1)
            mean = point[measure]
            better = (
                mean is not None and ref_mean is not None
                and (mean > ref_mean if measure == "judge_score" else mean < ref_mean)
            )  # fmt: skip
            point.update(wins=wins, losses=losses, beats=bool(wins > losses and better))
        points.append(point)
    return {"measure": measure, "points": points, "sweet_spot": sweet_spot(points)}


def sweet_spot(points: list[dict]) -> list[list[float]]:
    """Maximal runs [lo, hi] of consecutive swept α (reference excluded) that beat the reference."""
    swept = sorted((p for p in points if not p["reference"]), key=lambda p: p["alpha"])
    runs: list[list[float]] = []
    prev_beats = False
    for p in swept:
        if p["beats"]:
            if prev_beats:
                runs[-1][1] = p["alpha"]
            else:
                runs.append([p["alpha"], p["alpha"]])
        prev_beats = p["beats"]
    return runs
