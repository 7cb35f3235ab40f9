"""`steer --judge`: each response rated 0-2 for instruction relevance and for fluency, as AxBench does.

Two questions per response to an OpenAI-compatible judge (interp/llm_client.py), each asking for a short
reason and then `Rating: [[n]]` with n in 0, 1, 2: relevance reads the instruction and the response and
rates topical relatedness only; fluency reads the response alone and rates its language only (repetition
counts against it). The response's score is AxBench's aggregate: the harmonic mean of the two ratings,
0 when either is 0. The rubrics follow AxBench's (Wu et al. 2025) in our own words; its third question,
concept presence, has no counterpart here: steer measures what a feature does to answers, not whether a
named concept shows up.
"""

from __future__ import annotations

import re

RELEVANCE = """You are an impartial judge. Decide how closely the response below relates to the \
instruction it answers. Judge only the topic: ignore grammar, coherence and how informative it is.

First explain briefly what in the response relates to the instruction, or that nothing does. Then rate \
it: 0 if the response is unrelated to the instruction, 1 if it is only loosely or indirectly related, \
2 if it clearly and directly addresses the instruction. End with the rating in exactly this form: \
"Rating: [[score]]".

[Instruction]
{instruction}
[End of instruction]

[Response]
{response}
[End of response]"""

FLUENCY = """You are an impartial judge. Rate the fluency of the text below, and only its fluency: \
ignore whether it is complete, relevant, correct or informative.

First describe briefly how it reads: unnatural wording, broken grammar, awkward jumps, repeated phrases. \
Then rate it: 0 if it is not fluent (hard to understand, garbled or repetitive), 1 if it is mostly fluent \
with noticeable errors or awkward phrasing, 2 if it is fluent and close to flawless. End with the rating \
in exactly this form: "Rating: [[score]]".

[Text]
{response}
[End of text]"""

_RATING = re.compile(r"Rating:\s*\[\[\s*([0-9.]+)\s*\]\]")


def parse_rating(text: str) -> int:
    """The last `Rating: [[n]]` of an answer, n in 0, 1, 2; ValueError otherwise (the client re-asks)."""
    found = _RATING.findall(text or "")
    if not found:
        raise ValueError("no 'Rating: [[n]]' in the answer")
    value = float(found[-1])
    if value not in (0, 1, 2):
        raise ValueError(f"rating {found[-1]} is not 0, 1 or 2")
    return int(value)


def aggregate(relevance: int | None, fluency: int | None) -> float | None:
    """AxBench's score: the harmonic mean of the ratings, 0 if one is 0; None if one is missing."""
    if relevance is None or fluency is None:
        return None
    if relevance == 0 or fluency == 0:
        return 0.0
    return 2.0 / (1.0 / relevance + 1.0 / fluency)


def judge_responses(client, pairs: list[tuple[str, str]]) -> list[dict]:
    """For each (instruction, response): {"relevance", "fluency", "score", "error"}; one request per
    question, all in flight through the client's bounded pool; a missing rating leaves the score None."""
    asks = []
    for instruction, response in pairs:
        asks.append(
            [{"role": "user", "content": RELEVANCE.format(instruction=instruction, response=response)}]
        )
        asks.append([{"role": "user", "content": FLUENCY.format(response=response)}])
    replies = client.ask_many(asks, parse=parse_rating)
    out = []
    for j in range(len(pairs)):
        rel, flu = replies[2 * j], replies[2 * j + 1]
        errors = [f"{name}: {r.error}" for name, r in (("relevance", rel), ("fluency", flu)) if r.error]
        out.append(
            {"relevance": rel.value, "fluency": flu.value, "score": aggregate(rel.value, flu.value),
             "error": "; ".join(errors) or None}
        )  # fmt: skip
    return out
