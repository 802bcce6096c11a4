"""Member names (spec/PROTOCOL.md §6): what is allowed and when two names are the same."""

from __future__ import annotations

import unicodedata

from .constants import NAME_MAX_LENGTH, NAME_MIN_LENGTH

# Cc control, Cf format (zero-width joiners, bidi overrides: invisible spoofing), Cs
# surrogates, Co private use, Cn unassigned, and Z* separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def name_problem(name: str) -> str | None:
    """Why ``name`` breaks the rules of §6, or ``None`` when it is a valid name."""
    if not NAME_MIN_LENGTH <= len(name) <= NAME_MAX_LENGTH:
        return f"a name has {NAME_MIN_LENGTH} to {NAME_MAX_LENGTH} characters, not {len(name)}"
    for char in name:
        if char == "@":
            return "a name cannot contain '@'"
        if char.isspace() or unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"a name cannot contain U+{ord(char):04X} ({unicodedata.category(char)})"
    return None


def name_key(name: str) -> str:
    """The form names compare in (NFKC_Casefold): 'Alice', 'alice' and a fullwidth 'ALICE' collide."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
