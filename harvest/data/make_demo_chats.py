"""Regenerate demo_chats.jsonl: original demo conversations built from hand-written pieces.

    python harvest/data/make_demo_chats.py            # writes harvest/data/demo_chats.jsonl

Deterministic (fixed seed). The text is written for this project; numbers in the math and trivia
conversations are computed or taken from well-known facts so that the answers are right.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

# The hand-written pieces (original text written for fastsae) live beside this script as data.
_BLOCKS = json.loads(Path(__file__).with_name("demo_chat_blocks.json").read_text(encoding="utf-8"))
ADVICE, CODE, RECIPES, REFUSALS = _BLOCKS["ADVICE"], _BLOCKS["CODE"], _BLOCKS["RECIPES"], _BLOCKS["REFUSALS"]
SCIENCE, SYSTEM_PROMPTS, TRAVEL = _BLOCKS["SCIENCE"], _BLOCKS["SYSTEM_PROMPTS"], _BLOCKS["TRAVEL"]
TRIVIA, WRITING = _BLOCKS["TRIVIA"], _BLOCKS["WRITING"]

OUT = Path(__file__).with_name("demo_chats.jsonl")
rng = random.Random(20240611)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content.strip()}


def maybe_system(messages: list[dict], topic: str, p: float = 0.3) -> list[dict]:
    if rng.random() < p:
        return [msg("system", rng.choice(SYSTEM_PROMPTS[topic] + SYSTEM_PROMPTS["any"]))] + messages
    return messages


# ---- math: computed answers ---------------------------------------------------------------------------------


def math_discount():
    price = rng.choice([24, 36, 48, 59.99, 80, 120, 250])
    pct = rng.choice([10, 15, 20, 25, 30, 40])
    saved = round(price * pct / 100, 2)
    final = round(price - saved, 2)
    tax = rng.choice([5, 8, 10])
    with_tax = round(final * (1 + tax / 100), 2)
    return [
        msg("user", f"A jacket costs ${price} and it's {pct}% off. How much do I pay?"),
        msg(
            "assistant",
            f"The discount is {pct}% of ${price}, which is ${saved:.2f}. "
            f"Subtract that from the original price: ${price} - ${saved:.2f} = ${final:.2f}. "
            f"So you pay ${final:.2f}.",
        ),
        msg("user", f"And if there's {tax}% sales tax on top of the discounted price?"),
        msg(
            "assistant",
            f"Apply the tax to the discounted price: ${final:.2f} × {1 + tax / 100:.2f} = ${with_tax:.2f}. "
            f"Your total at the register would be about ${with_tax:.2f}.",
        ),
    ]


def math_average():
    n = rng.randint(4, 7)
    scores = [rng.randint(55, 100) for _ in range(n)]
    mean = sum(scores) / n
    s = sorted(scores)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    listed = ", ".join(map(str, scores))
    return [
        msg("user", f"My test scores this term were {listed}. What's my average?"),
        msg(
            "assistant",
            f"Add them up: {' + '.join(map(str, scores))} = {sum(scores)}. "
            f"There are {n} scores, so the average is {sum(scores)} / {n} = {mean:.2f}.",
        ),
        msg("user", "Is the median different?"),
        msg(
            "assistant",
            f"Sorted, the scores are {', '.join(map(str, s))}. "
            + (
                f"With {n} values the median is the middle one, {median}."
                if n % 2
                else f"With {n} values the median is the mean of the two middle ones, "
                f"({s[n // 2 - 1]} + {s[n // 2]}) / 2 = {median:g}."
            )
            + (
                " It's close to the average, so your scores are fairly balanced."
                if abs(median - mean) < 3
                else " It differs from the average because a few scores pull the mean away from the middle."
            ),
        ),
    ]


def math_temperature():
    c = rng.choice([-10, 0, 12, 18, 21, 25, 30, 37, 100])
    f = c * 9 / 5 + 32
    f2 = rng.choice([40, 50, 68, 75, 90, 104])
    c2 = (f2 - 32) * 5 / 9
    return [
        msg("user", f"What is {c}°C in Fahrenheit?"),
        msg("assistant", f"Multiply by 9/5 and add 32: {c} × 9/5 + 32 = {f:g}°F."),
        msg("user", f"And the other way round, {f2}°F in Celsius?"),
        msg("assistant", f"Subtract 32 and multiply by 5/9: ({f2} - 32) × 5/9 ≈ {c2:.1f}°C."),
    ]


def math_equation():
    a, x = rng.randint(2, 9), rng.randint(-6, 12)
    b = rng.randint(-20, 20)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    return [
        msg("user", f"Solve {a}x {sign} {abs(b)} = {c}"),
        msg(
            "assistant",
            f"Step 1: {'subtract' if b >= 0 else 'add'} {abs(b)} on both sides: {a}x = {c - b}.\n"
            f"Step 2: divide both sides by {a}: x = {c - b} / {a} = {x}.\n\n"
            f"Check: {a} × {x if x >= 0 else f'({x})'} {sign} {abs(b)} = {c}. ✓",
        ),
    ]


def math_interest():
    p = rng.choice([1000, 2500, 5000, 10000])
    r = rng.choice([2, 3, 4, 5, 6])
    years = rng.choice([3, 5, 10])
    total = p * (1 + r / 100) ** years
    simple = p * (1 + r * years / 100)
    return [
        msg(
            "user",
            f"If I put ${p:,} in a savings account at {r}% a year, compounded yearly, what do I have after {years} years?",
        ),
        msg(
            "assistant",
            f"Compound interest grows the balance by a factor of (1 + {r / 100}) each year:\n\n"
            f"A = {p:,} × (1.{r:02d})^{years} ≈ ${total:,.2f}\n\n"
            f"So you'd earn about ${total - p:,.2f} in interest.",
        ),
        msg("user", "How much less would simple interest give?"),
        msg(
            "assistant",
            f"Simple interest pays {r}% of the original ${p:,} each year: {p:,} × (1 + {r / 100} × {years}) = "
            f"${simple:,.2f}. That's ${total - simple:,.2f} less than with compounding, because compounding also "
            "earns interest on past interest.",
        ),
    ]


def math_geometry():
    r = rng.choice([2, 3, 5, 7.5, 10])
    w, h = rng.randint(3, 12), rng.randint(3, 12)
    return [
        msg("user", f"What's the area of a circle with radius {r} cm?"),
        msg("assistant", f"A = πr² = π × {r}² ≈ {math.pi * r * r:.2f} cm²."),
        msg("user", f"And a rectangle that's {w} cm by {h} cm? Which one is bigger?"),
        msg(
            "assistant",
            f"The rectangle's area is {w} × {h} = {w * h} cm². "
            + (
                "The circle is bigger."
                if math.pi * r * r > w * h
                else "The rectangle is bigger."
                if w * h > math.pi * r * r
                else "They're about the same."
            ),
        ),
    ]


def math_travel_time():
    d = rng.choice([120, 180, 240, 300, 450])
    v = rng.choice([60, 75, 80, 90, 100])
    t = d / v
    hours, minutes = int(t), round((t - int(t)) * 60)
    return [
        msg("user", f"I need to drive {d} km and I'll average {v} km/h. How long will it take?"),
        msg(
            "assistant",
            f"Time = distance / speed = {d} / {v} = {t:g} hours"
            + (f", which is {hours} h {minutes} min. " if minutes else ". ")
            + "Add some time for breaks and traffic.",
        ),
    ]


MATH = [
    math_discount,
    math_average,
    math_temperature,
    math_equation,
    math_interest,
    math_geometry,
    math_travel_time,
]


# ---- tool use --------------------------------------------------------------------------------------------------

CITIES = [
    ("Lisbon", 23, "sunny"),
    ("Oslo", 4, "light snow"),
    ("Nairobi", 19, "cloudy"),
    ("Osaka", 27, "humid and clear"),
    ("Montreal", -3, "windy"),
    ("Lima", 18, "overcast"),
    ("Cairo", 31, "clear"),
    ("Dublin", 11, "rain showers"),
]


def tool_weather():
    city, temp, cond = rng.choice(CITIES)
    call = {"name": "get_weather", "arguments": {"city": city, "unit": "celsius"}}
    result = {"city": city, "temperature": temp, "condition": cond, "humidity": rng.randint(30, 90)}
    advice = (
        "Take an umbrella."
        if "rain" in cond
        else "A warm coat is a good idea."
        if temp < 8
        else "Enjoy the day!"
    )
    return [
        msg(
            "system", 'You can call tools. To call one, reply with a JSON object with "name" and "arguments".'
        ),
        msg("user", f"What's the weather like in {city} right now?"),
        msg("assistant", json.dumps(call)),
        msg("tool", json.dumps(result)),
        msg(
            "assistant",
            f"It's currently {temp}°C and {cond} in {city}, with {result['humidity']}% humidity. {advice}",
        ),
    ]


def tool_calculator():
    a, b = rng.randint(120, 9999), rng.randint(12, 999)
    op, sym, val = rng.choice([("multiply", "×", a * b), ("add", "+", a + b), ("subtract", "-", a - b)])
    return [
        msg("system", "Tools available: calculator(expression). Use it for arithmetic instead of guessing."),
        msg("user", f"Quick, what's {a} {sym} {b}?"),
        msg(
            "assistant",
            json.dumps(
                {"name": "calculator", "arguments": {"expression": f"{a} {sym.replace('×', '*')} {b}"}}
            ),
        ),
        msg("tool", json.dumps({"result": val})),
        msg("assistant", f"{a} {sym} {b} = {val:,}."),
    ]


def tool_flights():
    src, dst = rng.sample(["Berlin", "Madrid", "Rome", "Vienna", "Prague", "Athens", "Warsaw"], 2)
    day = rng.choice(["2025-03-14", "2025-04-02", "2025-05-20", "2025-06-11"])
    flights = [
        {
            "flight": f"XA{rng.randint(100, 999)}",
            "departs": f"{h:02d}:{m:02d}",
            "price_eur": rng.randint(49, 260),
        }
        for h, m in sorted({(rng.randint(6, 21), rng.choice([0, 15, 30, 45])) for _ in range(3)})
    ]
    cheapest = min(flights, key=lambda f: f["price_eur"])
    return [
        msg("user", f"Can you find me a flight from {src} to {dst} on {day}?"),
        msg(
            "assistant",
            json.dumps({"name": "search_flights", "arguments": {"from": src, "to": dst, "date": day}}),
        ),
        msg("tool", json.dumps({"flights": flights})),
        msg(
            "assistant",
            f"I found {len(flights)} flights from {src} to {dst} on {day}:\n"
            + "\n".join(f"- {f['flight']} at {f['departs']}, €{f['price_eur']}" for f in flights)
            + f"\n\nThe cheapest is {cheapest['flight']} at {cheapest['departs']} for €{cheapest['price_eur']}. "
            "Want me to check baggage rules for it?",
        ),
        msg("user", "No thanks, that's all."),
        msg("assistant", "Great, have a good trip!"),
    ]


def tool_calendar():
    who = rng.choice(["Priya", "Tomás", "Mei", "Jonas", "Amara"])
    day = rng.choice(["Monday", "Tuesday", "Thursday", "Friday"])
    hour = rng.choice([9, 10, 14, 15, 16])
    return [
        msg("system", "You manage the user's calendar with the tools create_event and list_events."),
        msg("user", f"Put a 30 minute call with {who} on {day} at {hour}:00."),
        msg(
            "assistant",
            json.dumps(
                {
                    "name": "create_event",
                    "arguments": {
                        "title": f"Call with {who}",
                        "day": day,
                        "start": f"{hour}:00",
                        "minutes": 30,
                    },
                }
            ),
        ),
        msg("tool", json.dumps({"status": "created", "event_id": f"evt_{rng.randint(1000, 9999)}"})),
        msg(
            "assistant", f'Done: "Call with {who}" is on your calendar for {day} from {hour}:00 to {hour}:30.'
        ),
    ]


TOOLS = [tool_weather, tool_calculator, tool_flights, tool_calendar]


# ---- assembly -----------------------------------------------------------------------------------------------


def from_blocks(topic: str, block: dict) -> list[dict]:
    """A hand-written block: {"turns": [user, assistant, user, assistant, ...]} (+ optional follow-ups)."""
    turns = list(block["turns"])
    extra = block.get("more", [])
    if extra and rng.random() < 0.7:
        turns += list(rng.choice(extra))
    messages = [msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    return maybe_system(messages, topic)


def trivia_session() -> list[dict]:
    qs = rng.sample(TRIVIA, rng.randint(1, 3))
    messages = []
    for q, a in qs:
        messages += [msg("user", q), msg("assistant", a)]
    return maybe_system(messages, "trivia", 0.2)


def main() -> None:
    convs: list[tuple[str, list[dict]]] = []
    for topic, blocks in (
        ("coding", CODE),
        ("cooking", RECIPES),
        ("travel", TRAVEL),
        ("science", SCIENCE),
        ("writing", WRITING),
        ("advice", ADVICE),
    ):
        for block in blocks:
            for _ in range(block.get("copies", 1)):
                convs.append((topic, from_blocks(topic, block)))
    for block in REFUSALS:
        convs.append(
            (
                "refusal",
                maybe_system(
                    [msg("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(block)], "any", 0.2
                ),
            )
        )
    for _ in range(50):
        convs.append(("math", maybe_system(rng.choice(MATH)(), "math", 0.25)))
    for _ in range(20):
        convs.append(("tool", rng.choice(TOOLS)()))
    for _ in range(30):
        convs.append(("trivia", trivia_session()))
    rng.shuffle(convs)
    with open(OUT, "w", encoding="utf-8") as f:
        for i, (topic, messages) in enumerate(convs):
            f.write(
                json.dumps({"id": f"demo-{i:04d}", "topic": topic, "messages": messages}, ensure_ascii=False)
                + "\n"
            )
    print(f"wrote {len(convs)} conversations to {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
