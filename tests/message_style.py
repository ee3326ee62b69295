"""What a refusal's message must be for the person who reads it (DESIGN.md: it says what was wrong and how to fix it).

Not its wording: a message may be reworded freely. It must be plain, readable text: no garbled word (capitals glued
to a lower-case word, as in ``XXsend`` or ``pointXX``; exception names such as ``EOFError`` are fine) and no
shouting (an English word in capitals; the acronyms below are not words). Checks of what a message must name (the field, the limit, the value sent) are the tests' own.
"""

from __future__ import annotations

import re

ACRONYMS = {"DOS", "API", "ASGI", "BMP", "CORS", "EXIF", "GET", "GIF", "HEAD", "HTTP", "JPEG", "JSON", "KB", "MB", "OPTIONS", "PNG",
            "POST", "RGB", "RGBA", "SAM", "SHA", "TIFF", "WEBP", "WWW", "URL", "ID", "OK"}


def assert_readable(message: str) -> None:
    assert message and message == message.strip(), repr(message)
    for word in re.findall(r"[A-Za-z]+", message):
        if re.fullmatch(r"[A-Z][A-Za-z]*Error", word):  # an exception's name, as Python spells it
            continue
        garbled = re.fullmatch(r"[A-Z]{2,}[a-z][A-Za-z]*|[A-Za-z]*[a-z][A-Z]{2,}", word)
        shouted = len(word) >= 2 and word.isupper() and word not in ACRONYMS
        assert not garbled and not shouted, f"{word!r} in {message!r}"
