"""Member names (spec/PROTOCOL.md §6): which are allowed, and which count as the same.

Validity is the PRECIS profile UsernameCaseMapped (RFC 8265 §3.3), through ``precis-i18n``:
it refuses controls, spaces, format and default-ignorable code points (zero-width joiners,
bidi overrides, variation selectors, U+034F), fillers (U+3164, U+115F, U+1160, U+FFA0),
symbols and punctuation beyond ASCII (U+2800), compatibility forms and unassigned code
points. Sameness has two keys: case and compatibility forms (:func:`name_key`, as before),
and look-alikes across scripts, the confusable skeleton of UTS #39 (:func:`name_skeleton`).
"""

from __future__ import annotations

import unicodedata
from functools import cache
from typing import TYPE_CHECKING

from .constants import NAME_MAX_LENGTH, NAME_MIN_LENGTH

if TYPE_CHECKING:
    from precis_i18n.profile import Profile

#: The PRECIS profile of §6.1 (RFC 8265 §3.3).
PROFILE = "UsernameCaseMapped"


@cache
def _profile() -> Profile:
    # Loaded on first use: a client that never checks a name does not pay for the import.
    import precis_i18n  # noqa: PLC0415

    return precis_i18n.get_profile(PROFILE)


@cache
def _prototypes() -> dict[str, str]:
    from ._confusables import PROTOTYPES  # noqa: PLC0415

    return PROTOTYPES


def enforce(name: str) -> str:
    """``name`` as UsernameCaseMapped enforces it (width-mapped, lower-cased, NFC); raises
    :class:`UnicodeEncodeError` naming the first code point the profile refuses."""
    return _profile().enforce(name)


def name_problem(name: str) -> str | None:
    """Why ``name`` breaks the rules of §6.1, or ``None`` when it is a valid name."""
    if not NAME_MIN_LENGTH <= len(name) <= NAME_MAX_LENGTH:
        return f"a name has {NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters, not {len(name)}"
    try:
        enforced = enforce(name)
    except UnicodeEncodeError as exc:
        # The reason is precis-i18n's: DISALLOWED/spaces, DISALLOWED/has_compat, ...; the
        # offending code point is named by number, never quoted (§14.3).
        reason = exc.reason.lower().replace("/", ": ").replace("_", " ")
        if 0 <= exc.start < len(exc.object):
            point = ord(exc.object[exc.start])
            sent = ord(name[exc.start]) if len(exc.object) == len(name) else point
            mapped = f"as U+{point:04X}: " if sent != point else ""
            return f"a name cannot contain U+{sent:04X} ({mapped}{reason}, RFC 8265)"
        return f"the name is refused by {PROFILE} ({reason}, RFC 8265)"
    if "@" in enforced:
        return "a name cannot contain '@' or a character that stands for it"
    return None


def name_key(name: str) -> str:
    """The case and compatibility key (NFKC_Casefold): 'Alice', 'alice', a fullwidth 'ALICE'
    and 'straße'/'STRASSE' collide."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def skeleton(text: str) -> str:
    """The UTS #39 skeleton of ``text``: NFD, each code point replaced by its prototype from
    confusables.txt (protocol/_confusables.py), NFD again."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    mapped = "".join([prototypes.get(char, char) for char in decomposed])
    return unicodedata.normalize("NFD", mapped)


def name_skeleton(name: str) -> str:
    """The look-alike key: the skeleton of the name as sent (after NFKC), then case-folded.

    'alice' with a Cyrillic U+0430 and the Latin 'alice' collide, and so do 'IVAN' and 'lvan': the skeleton is
    taken before case folding, since folding first would lose that 'I' looks like 'l'.
    """
    folded = skeleton(unicodedata.normalize("NFKC", name)).casefold()
    return unicodedata.normalize("NFD", folded)
