"""Session ids the server makes: 32 letters and digits, 190 random bits."""

from __future__ import annotations

import secrets
import string

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 32
_ID_SPACE = len(_ID_ALPHABET) ** _ID_LENGTH


def new_session_id() -> str:
    """A server-made session id: 32 letters and digits, 190 random bits. Always a valid
    id (``records.SESSION_ID`` wants a letter or digit first, which ``token_urlsafe``
    misses one time in 32). One uniform draw over every such id, written in base 62:
    one or two reads of the system's random source, where a choice per letter made 32."""
    value = secrets.randbelow(_ID_SPACE)
    letters = []
    for _ in range(_ID_LENGTH):
        value, digit = divmod(value, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[digit])
    return "".join(letters)
