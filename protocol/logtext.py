"""Peer text made safe for a log (spec/PROTOCOL.md §14.3): one record, one line, no escapes.

Names, pickle global names, decoder complaints and any other string a peer chose can hold
ESC (a terminal escape sequence: clear the screen, rewrite earlier lines), CR or LF (a
forged record at the start of a line), bidi overrides (text that reads differently from
what it is) or lone surrogates (which a UTF-8 log cannot even encode). :func:`escape`
writes every such code point as a visible Python escape; :class:`OneLineFormatter` applies
the same rule to whole records, so a call site that forgets still cannot break a line.
"""

from __future__ import annotations

import logging

#: The short escapes people read without a table; every other code point is \\x, \\u or \\U.
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _escape_unprintable(text: str) -> str:
    # str.isprintable() is false exactly for the categories Cc, Cf, Cs, Co, Cn, Zl, Zp and
    # Zs other than U+0020: controls, format characters, surrogates, private use,
    # unassigned code points and every separator that is not a plain space.
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def escape(text: str, limit: int | None = None) -> str:
    """``text`` as printable, single-line text that still says exactly what it was.

    Every code point that is not printable (general categories Cc, Cf, Cs, Co, Cn, Zl, Zp,
    and Zs other than U+0020) becomes a Python escape (``\\x1b``, ``\\n``, ``\\u202e``,
    ``\\U000e0041``), and so does the backslash itself (``\\\\``), so that the escaped form
    of a peer's text can never be mistaken for the escape of another. With ``limit``,
    only the first ``limit`` code points are kept, followed by ``...`` when some were cut.
    """
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    text = _escape_unprintable(text)
    return text + "..." if cut else text


class OneLineFormatter(logging.Formatter):
    """A formatter whose every record is one line of printable text.

    The record is formatted as usual (traceback included), then every code point that is
    not printable is escaped as :func:`escape` does, except the backslash: text a call
    site already escaped stays as it was.
    """

    def format(self, record: logging.LogRecord) -> str:
        return _escape_unprintable(super().format(record))
