"""Names (spec §6): the PRECIS profile, the two comparison keys, and the confusables table."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from protocol._confusables import PROTOTYPES, UNICODE_VERSION
from protocol.names import enforce, name_key, name_problem, name_skeleton, skeleton
from protocol.server import Room

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "tools" / "make_confusables.py"


# --- validity (§6.1) ---------------------------------------------------------------------------------

#: Each kind of code point the profile refuses (the table of §6.1), in a name otherwise valid.
REFUSED = {
    "control": "al\x1bice",
    "space": "al ice",
    "no-break-space": "al\u00a0ice",
    "line-separator": "al\u2028ice",
    "zero-width-joiner": "al\u200dice",
    "bidi-override": "\u202ealice",
    "grapheme-joiner": "alice\u034f",
    "variation-selector-1": "alice\ufe00",
    "variation-selector-16": "alice\ufe0f",
    "variation-selector-17": "alice\U000e0100",
    "hangul-filler": "\u3164",
    "hangul-fillers-only": "\u3164\u3164\u3164",
    "choseong-filler": "\u115f",
    "jungseong-filler": "\u1160",
    "halfwidth-hangul-filler": "\uffa0",
    "tag": "alice\U000e0041",
    "braille-blank": "\u2800",
    "emoji": "\U0001f600",
    "star": "\u2605alice",
    "ligature": "\ufb01le",
    "superscript": "x\u00b2",
    "math-script-a": "\U0001d49c",
    "mixed-direction": "\u0639\u0644\u064aabc",
    "private-use": "al\ue000",
    "surrogate": "al\ud800",
    "noncharacter": "al\uffff",
    "unassigned": "al\u0378",
    "at": "al@ice",
    "fullwidth-at": "alice\uff20host",
    "empty": "",
    "too-long": "a" * 33,
}


@pytest.mark.parametrize("name", REFUSED.values(), ids=REFUSED)
def test_the_profile_refuses_with_a_printable_reason(name: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert problem.isprintable()
    # The offending code point is named by number, never quoted raw.
    assert not any(char in problem for char in name if not char.isascii())


def test_the_reason_names_the_code_point_as_sent() -> None:
    assert name_problem("alice\ufe0f") == (
        "a name cannot contain U+FE0F (disallowed: precis ignorable properties, RFC 8265)"
    )
    # Width mapping turns U+FFA0 into U+1160 before the check: both are named.
    problem = name_problem("\uffa0")
    assert problem is not None and "U+FFA0" in problem and "as U+1160" in problem


@pytest.mark.parametrize(
    "name",
    [
        "alice",
        "Zo\u00eb",
        "e\u0301clair",
        "\u674e\u5c0f\u9f8d",
        "\u0395\u03bb\u03ad\u03bd\u03b7",
        "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
        "a-b_c.d",
        "o'brien",
        "\uff21\uff2c\uff29\uff23\uff25",
        "\u212a",  # KELVIN SIGN lowercases to k
        "\U00020000" * 32,
        "\u0430lice",  # valid; only a present alice makes it taken (§6.2)
    ],
)
def test_names_in_any_script_remain_valid(name: str) -> None:
    assert name_problem(name) is None


def test_length_counts_code_points_as_sent() -> None:
    # U+0130 lowercases to two code points; the limit applies to the name as sent.
    assert name_problem("\u0130" * 32) is None
    assert len(enforce("\u0130" * 32)) == 64
    assert name_problem("\u0130" * 33) is not None


def test_enforce_is_the_profiles_form() -> None:
    assert enforce("\uff21lice") == "alice"
    assert enforce("Zoe\u0308") == "zo\u00eb"
    with pytest.raises(UnicodeEncodeError):
        enforce("alice\u034f")


# --- comparison (§6.2) ------------------------------------------------------------------------------


def test_the_key_is_nfkc_casefold_as_before() -> None:
    for name in ("Alice", "\uff21\uff2c\uff29\uff23\uff25", "ALICE"):
        assert name_key(name) == "alice"
    assert name_key("stra\u00dfe") == name_key("STRASSE") == "strasse"


def test_the_skeleton_is_uts39_over_confusables_13() -> None:
    assert UNICODE_VERSION == "13.0.0"
    assert skeleton("\u0430") == "a"
    assert skeleton("m") == "rn"
    assert skeleton("0") == "O"
    assert skeleton("I") == "l"
    # NFD before and after: a precomposed letter maps like its decomposition.
    assert skeleton("\u00e9") == skeleton("e\u0301") == unicodedata.normalize("NFD", "\u00e9")


def test_the_skeleton_key_is_taken_before_folding() -> None:
    assert name_skeleton("IVAN") == name_skeleton("lvan")
    # Folding first would give "ivan", which is its own prototype, and lose the look-alike.
    assert name_skeleton("ivan") != name_skeleton("lvan")
    assert name_skeleton("\u0440\u0430\u0443\u0440\u0430l") == name_skeleton("PayPal") == "paypal"


def test_the_table_maps_single_code_points_to_prototypes_that_map_no_further() -> None:
    assert len(PROTOTYPES) > 6000
    assert all(len(source) == 1 for source in PROTOTYPES)
    # Prototypes are fixed points of the table (UTS #39), so one pass is a skeleton.
    assert all(char not in PROTOTYPES for prototype in PROTOTYPES.values() for char in prototype)


def test_a_departure_frees_both_keys() -> None:
    room: Room[int] = Room()
    room.join(1, "Alice", "::1")
    room.leave(1)
    room.join(2, "\u0430lice", "::1")
    room.leave(2)
    assert room.join(3, "ALICE", "::1").name == "ALICE"


# --- the generated table and the cost of importing it --------------------------------------------------


def test_the_generator_writes_exactly_the_committed_table(tmp_path: Path) -> None:
    out = tmp_path / "confusables.py"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    committed = ROOT / "protocol" / "_confusables.py"
    assert out.read_bytes() == committed.read_bytes(), "protocol/_confusables.py is stale"


def loaded_after(code: str) -> list[str]:
    """What ``code`` prints, run in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_importing_the_package_loads_neither_the_profile_nor_the_table() -> None:
    # A client never checks names: it does not pay for precis-i18n or 6,000 prototypes.
    modules = "print('precis_i18n' in sys.modules, 'protocol._confusables' in sys.modules)"
    assert loaded_after(f"import sys, protocol, chatwire_client; {modules}") == ["False", "False"]
    checked = "from protocol.names import name_problem, name_skeleton; name_problem('a'); name_skeleton('a')"
    assert loaded_after(f"import sys; {checked}; {modules}") == ["True", "True"]
