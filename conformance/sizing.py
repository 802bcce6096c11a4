"""Sizes in the server's own encoding, predicted from frames the server sent (spec §8.4-§8.6).

The size rules compare payloads *as the server encodes them* with ``max_frame``. A server
may encode msgpack in any legal form (§4.2's encoding rules are a SHOULD): ``str 8`` for a
short string, fields in another order, extra fields. So the suite does not compute sizes
with its own encoder; it measures a frame the server sent and extrapolates from it.

A string's encoding is a header then its UTF-8 octets. The header's size depends only on the
length's class: msgpack's ``fixstr``/``str 8``/``str 16``/``str 32`` ranges (pickle protocol 2
writes every string with a 4-octet length). So within one class, a string ``n`` octets longer
makes a payload exactly ``n`` octets larger, whatever the encoder, as long as it encodes the
same value the same way each time.
"""

from __future__ import annotations

#: The first octet count of each msgpack str class: fixstr, str 8, str 16, str 32.
_CLASS_STARTS = (0, 32, 256, 65536)
#: How much shorter a probe string is than the string it stands for.
PROBE_STEP = 64


def str_class(octets: int) -> int:
    """Which msgpack str format (0 fixstr .. 3 str 32) a string of ``octets`` octets can use."""
    return sum(1 for start in _CLASS_STARTS[1:] if octets >= start)


def probe_length(octets: int, step: int = PROBE_STEP) -> int:
    """A length up to ``step`` below ``octets`` in the same class (``octets`` itself at a class start)."""
    start = _CLASS_STARTS[str_class(octets)]
    return max(octets - step, start)


def same_class(a: int, b: int) -> bool:
    return str_class(a) == str_class(b)
