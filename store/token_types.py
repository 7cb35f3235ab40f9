"""Per-token role labels, stored as uint8 in ``token_types``."""

from enum import IntEnum


class TokenType(IntEnum):
    SPECIAL = 0  # any id in the tokenizer's special/added tokens (<|im_start|>, <|eot_id|>, bos, ...)
    # other tokens the chat template inserts: role names, separators, newlines, default system text
    TEMPLATE = 1
    SYSTEM = 2  # message content by role
    USER = 3
    ASSISTANT = 4
    TOOL = 5
    TEXT = 6  # plain text in block mode


NUM_TOKEN_TYPES = len(TokenType)


def parse_token_types(spec: str, *, flag: str = "token types") -> frozenset[TokenType]:
    """A token-type filter such as ``"all"``, ``"-special"``, ``"assistant,user"`` -> the types it selects.

    Comma-separated, case-insensitive items: a type name (keep it), ``-name`` (drop it) or ``all``. Only drops
    means "all but these"; otherwise the kept names minus the dropped ones. Bad specs raise ValueError naming
    ``flag`` (callers re-raise it as their own error class)."""
    names = {t.name.lower(): t for t in TokenType}
    valid = f"valid: all, {', '.join(names)}"
    keep: set[TokenType] = set()
    drop: set[TokenType] = set()
    items = [item.strip().lower() for item in str(spec).split(",")]
    if not any(items):
        raise ValueError(f"{flag}: empty token-type spec {spec!r}; {valid}, -<name>")
    for item in items:
        negate = item.startswith("-")
        name = item[1:].strip() if negate else item
        if name == "all":
            types = set(TokenType)
        elif name in names:
            types = {names[name]}
        else:
            raise ValueError(f"{flag}: unknown token type {name!r} in {spec!r}; {valid} (prefix '-' to drop)")
        (drop if negate else keep).update(types)
    result = frozenset((keep or set(TokenType)) - drop)
    if not result:
        raise ValueError(f"{flag}: token-type spec {spec!r} selects no token type")
    return result


def format_token_types(types: frozenset[TokenType]) -> str:
    """The inverse of :func:`parse_token_types` (canonical order), e.g. for logs and checkpoints."""
    return "all" if types == frozenset(TokenType) else ",".join(t.name.lower() for t in sorted(types))
