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
