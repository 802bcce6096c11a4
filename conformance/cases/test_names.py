"""Names: each validity rule (PRECIS UsernameCaseMapped), collisions by key and by confusable
skeleton, and names kept as sent (§6)."""

from __future__ import annotations

from protocol import Error, Hello, Left, Roster, Say, Welcome, Who
from protocol.constants import NAME_MAX_LENGTH, ErrorCode

from ..context import Context, joined, left, relayed
from ..registry import MUST, case


def _all_invalid(ctx: Context, names: list[str]) -> None:
    """Each name is refused with name_invalid (non-fatal); the connection can still join after."""
    peer = ctx.peer("joiner")
    for name in names:
        peer.send(Hello(name))
        error = peer.expect_error(ErrorCode.NAME_INVALID, fatal=False)
        assert error is not None, f"name {name!r} was not refused"
    peer.join(ctx.name("joiner"))


def _all_valid(ctx: Context, names: list[str]) -> None:
    """Each name joins, and welcome carries it exactly."""
    for name in names:
        peer = ctx.peer("joiner")
        welcome = peer.join(name)
        assert welcome.name == name, f"welcome.name {welcome.name!r} differs from {name!r}"
        ctx.close_gracefully(peer)


def _padded(ctx: Context, filler: str, length: int) -> str:
    """A name of exactly ``length`` code points, unique to this run."""
    unique = ctx.name("")
    return unique + filler * (length - len(unique))


@case(
    "NAME-LENGTH",
    "6.1",
    MUST,
    "names have 1 to 32 code points: '' and 33 are name_invalid, 32 (astral too) join",
)
def test_name_length(ctx: Context) -> None:
    # U+20000, a CJK ideograph outside the BMP: one code point, four octets of UTF-8.
    _all_invalid(
        ctx, ["", _padded(ctx, "a", NAME_MAX_LENGTH + 1), _padded(ctx, "\U00020000", NAME_MAX_LENGTH + 1)]
    )
    _all_valid(ctx, [_padded(ctx, "a", NAME_MAX_LENGTH), _padded(ctx, "\U00020000", NAME_MAX_LENGTH)])


#: §6.1 rule 2, the whitespace of Unicode 14.0: every code point whose ``str.isspace()`` is true
#: (general category Zs, or bidirectional class WS, B or S), which covers Zl and Zp too.
WHITESPACE = (
    *range(0x0009, 0x000E),
    *range(0x001C, 0x0021),
    0x0085,
    0x00A0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)


@case(
    "NAME-WHITESPACE", "6.1", MUST, "names with whitespace (each code point of §6.1's list) are name_invalid"
)
def test_name_whitespace(ctx: Context) -> None:
    _all_invalid(ctx, [" lead", "trail ", *(f"a{chr(c)}b" for c in WHITESPACE)])


@case("NAME-CONTROL", "6.1", MUST, "names with control characters (Cc) are name_invalid")
def test_name_control(ctx: Context) -> None:
    _all_invalid(ctx, ["\x00", "a\x1b[31mb", "a\x07", "a\x7f", "a\x9bb", "a\rb"])


@case(
    "NAME-FORMAT",
    "6.1",
    MUST,
    "names with format characters (Cf: ZWJ, bidi overrides, BOM, soft hyphen) are name_invalid",
)
def test_name_format(ctx: Context) -> None:
    _all_invalid(ctx, ["a\u200db", "\u202eevil", "a\u2066b", "\ufeffbom", "a\u00adb", "a\u200bb"])


@case(
    "NAME-UNASSIGNED-PRIVATE",
    "6.1",
    MUST,
    "names with private-use (Co) or unassigned (Cn) code points are name_invalid",
)
def test_name_unassigned_private(ctx: Context) -> None:
    # Noncharacters are unassigned in every Unicode version; U+0378 has stayed unassigned too.
    _all_invalid(
        ctx, ["a\ue000", "\U000f0000", "a\U0010fffd", "a\u0378", "a\ufffe", "a\uffff", "a\U0010ffff"]
    )


@case("NAME-SURROGATE", "6.1", MUST, "a name with a lone surrogate (Cs) is name_invalid", codecs=("pickle",))
def test_name_surrogate(ctx: Context) -> None:
    # Only pickle can carry a lone surrogate in a string; in msgpack it is invalid UTF-8 (MSGPACK-UTF8).
    _all_invalid(ctx, ["a\ud800", "\udfff"])


@case(
    "NAME-AT",
    "6.1",
    MUST,
    "names with '@', or with U+FF20 FULLWIDTH COMMERCIAL AT whose PRECIS form is '@', are name_invalid",
)
def test_name_at(ctx: Context) -> None:
    _all_invalid(ctx, ["@", "a@b", "@lead", "trail@", ctx.name("a\uff20b"), "\uff20"])


@case(
    "NAME-INVISIBLE",
    "6.1",
    MUST,
    "default-ignorable code points, variation selectors and fillers are name_invalid, "
    "in a name or alone (UsernameCaseMapped)",
)
def test_name_invisible(ctx: Context) -> None:
    unique = ctx.name("alice")
    marks = ["\u034f", "\ufe00", "\ufe0f", "\U000e0100", "\u3164", "\u2060", "\U000e0041", "\u180e"]
    fillers = ["\u3164", "\u2800", "\uffa0", "\u115f", "\u1160"]
    _all_invalid(
        ctx,
        [
            *(unique + mark for mark in marks),
            *(unique[:3] + mark + unique[3:] for mark in marks),
            *fillers,
            *(filler * 3 for filler in fillers),
        ],
    )


@case(
    "NAME-SYMBOL-COMPAT",
    "6.1",
    MUST,
    "symbols outside ASCII, compatibility forms and mixed-direction names are name_invalid",
)
def test_name_symbol_compat(ctx: Context) -> None:
    unique = ctx.name("")
    _all_invalid(
        ctx,
        [
            f"\U0001f600{unique}",
            f"\u2605{unique}",
            f"\ufb01le{unique}",
            f"x\u00b2{unique}",
            f"\U0001d49c{unique}",
            f"\u0639\u0644\u064aabc{unique}",
        ],
    )


@case("NAME-VALID-UNICODE", "6.1", MUST, "names in any script, with combining marks or fullwidth forms, join")
def test_name_valid_unicode(ctx: Context) -> None:
    bases = ["Zoë", "李小龍", "Ελένη", "e\u0301clair", "العربية", "a-b_c.d", "o'brien", "\uff2d\uff41\uff58"]
    _all_valid(ctx, [ctx.name(base) for base in bases])


def _taken(ctx: Context, held: str, tried: list[str]) -> None:
    """While ``held`` is a member, every name in ``tried`` is name_taken (non-fatal)."""
    holder = ctx.peer("holder")
    holder.join(held)
    peer = ctx.peer("contender")
    for name in tried:
        peer.send(Hello(name))
        peer.expect_error(ErrorCode.NAME_TAKEN, fatal=False)
    peer.join(ctx.name("contender"))


@case("NAME-TAKEN-EXACT", "6.2", MUST, "a member's exact name is name_taken (non-fatal)")
def test_name_taken_exact(ctx: Context) -> None:
    name = ctx.name("alice")
    _taken(ctx, name, [name, name])


@case("NAME-TAKEN-CASE", "6.2", MUST, "names differing only in case collide (Alice, alice, ALICE)")
def test_name_taken_case(ctx: Context) -> None:
    name = ctx.name("Alice")
    _taken(ctx, name, [name.lower(), name.upper(), name.swapcase()])


@case(
    "NAME-TAKEN-NFKC",
    "6.2",
    MUST,
    "names equal under NFKC_Casefold collide (fullwidth, ß/SS, composed and combining)",
)
def test_name_taken_nfkc(ctx: Context) -> None:
    unique = ctx.name("")
    fullwidth_digits = unique.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    _taken(
        ctx,
        f"alice{unique}",
        [
            f"\uff21\uff2c\uff29\uff23\uff25{unique}",
            f"\uff21\uff2c\uff29\uff23\uff25{fullwidth_digits}",
            f"Alice{fullwidth_digits}",
        ],
    )
    _taken(ctx, f"straße{unique}", [f"STRASSE{unique}", f"strasse{unique}"])
    _taken(ctx, f"Zo\u00eb{unique}", [f"Zoe\u0308{unique}", f"ZOE\u0308{unique}"])


@case(
    "NAME-TAKEN-CONFUSABLE",
    "6.2",
    MUST,
    "names with equal UTS #39 skeletons collide (Cyrillic \u0430 for a, I for l, 0 for O)",
)
def test_name_taken_confusable(ctx: Context) -> None:
    unique = ctx.name("")
    _taken(ctx, f"alice{unique}", [f"\u0430lice{unique}", f"\u0430l\u0456ce{unique}"])
    _taken(ctx, f"paypal{unique}", [f"\u0440\u0430\u0443\u0440\u0430l{unique}"])
    _taken(ctx, f"lvan{unique}", [f"IVAN{unique}"])
    _taken(ctx, f"bob{unique}", [f"b0b{unique}", f"b\u03bfb{unique}"])


@case(
    "NAME-TAKEN-FULL-CASEFOLD",
    "6.2",
    MUST,
    "full case folding (CaseFolding.txt C and F, not T): ẞ is ss, İ is i + U+0307 but not i",
)
def test_name_taken_full_casefold(ctx: Context) -> None:
    unique = ctx.name("")
    # F mappings: capital sharp s to "ss", U+0130 to i + combining dot. (U+0149, whose F
    # mapping is U+02BC n, is not PVALID under §6.1, so it cannot hold a name.)
    _taken(ctx, f"\u1e9e{unique}", [f"ss{unique}", f"SS{unique}"])
    _taken(ctx, f"\u0130x{unique}", [f"i\u0307x{unique}", f"I\u0307X{unique}"])
    # T (Turkic) mappings are not applied: U+0130 does not fold to a plain i.
    ctx.peer("dotted").join(f"\u0130y{unique}")
    plain = ctx.peer("plain")
    plain.send(Hello(f"iy{unique}"))
    reply = plain.expect(lambda m: isinstance(m, Welcome | Error), what="welcome")
    assert isinstance(reply, Welcome), (
        f"'iy{unique}' was refused while '\u0130y{unique}' is a member ({reply!r}): the Turkic "
        "folding of U+0130 to i (status T) is not part of §6.2's key"
    )


@case(
    "NAME-CONFUSABLE-DISTINCT",
    "6.2",
    MUST,
    "names whose skeletons differ are different names (i and l, accented and plain)",
)
def test_name_confusable_distinct(ctx: Context) -> None:
    unique = ctx.name("")
    first = ctx.peer("first")
    first.join(f"lvan{unique}")
    second = ctx.peer("second")
    welcome = second.join(f"ivan{unique}")
    third = ctx.peer("third")
    third.join(f"iv\u00e1n{unique}")
    assert welcome.clients == 2, f"both must be members, got clients {welcome.clients}"


@case("NAME-FREED", "6.2", MUST, "a departed member's name is free again (in any case variant)")
def test_name_freed(ctx: Context) -> None:
    observer = ctx.member("observer")
    name = ctx.name("Leaver")
    leaver = ctx.peer("leaver")
    leaver.join(name)
    observer.expect(joined(name))
    ctx.close_gracefully(leaver)
    observer.expect(left(name), what=f"left for {name!r}")
    again = ctx.peer("again")
    welcome = again.join(name.upper())
    assert welcome.name == name.upper(), f"expected welcome for {name.upper()!r}, got {welcome!r}"


@case("NAME-AS-SENT", "6.3", MUST, "joined, message, roster and left carry the name exactly as sent")
def test_name_as_sent(ctx: Context) -> None:
    observer = ctx.member("observer")
    name = ctx.name("\uff2d\uff49\uff58\uff45\uff44-A\u030angstro\u0308m-")
    peer = ctx.peer("mixed")
    welcome = peer.join(name)
    assert welcome.name == name, f"welcome.name {welcome.name!r} is not {name!r}"
    notice = observer.expect(joined(name), what=f"joined with name {name!r} exactly")
    assert notice.name == name
    peer.send(Say("hi"))
    observer.expect(relayed("hi", name), what=f"message from {name!r} exactly")
    peer.send(Who())
    roster = peer.expect(Roster)
    assert name in [m.name for m in roster.members], f"{name!r} is not in the roster {roster!r}"
    ctx.close_gracefully(peer)
    gone = observer.expect(lambda m: isinstance(m, Left), what=f"left for {name!r}")
    assert gone.name == name, f"left.name {gone.name!r} is not {name!r}"
    assert not [m for m in observer.inbox if isinstance(m, Welcome)]
