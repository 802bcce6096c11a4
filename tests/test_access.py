"""Access control without sockets (spec §17.3, §17.4): the auth file, the token check, reserved
names, the failure limiter, and the order of checks in the core, with the time passed in."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import pytest

from protocol import CLIENT_MESSAGES, Error, FrameDecoder, Hello, RemoteProtocolError, Welcome, get_codec
from protocol.connection import encode_message
from protocol.constants import AUTH_BURST, AUTH_MAX_SOURCES, AUTH_REFILL_SECONDS, FATAL, ErrorCode
from protocol.messages import SERVER_MESSAGES, from_wire
from protocol.server import ServerCore
from protocol.server.access import Access, AuthFileError, FailureLimiter, Tokens, source_key
from protocol.server.memory import MemoryServer

CODEC = get_codec("msgpack")
TOKEN = "plain-token-0123456789"
OWNER_TOKEN = "owner-token-0123456789"
AUTH_FILE = f"# who may join\n\n{TOKEN}\nowner {OWNER_TOKEN}\n"


def _tokens(tmp_path: Path, text: str = AUTH_FILE) -> Tokens:
    path = tmp_path / "auth"
    path.write_text(text, encoding="utf-8")
    return Tokens.load(path)


# --- the auth file -----------------------------------------------------------------------------


def test_the_auth_file_admits_its_tokens_and_reserves_names(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path)
    plain, owner = tokens.admits(TOKEN), tokens.admits(OWNER_TOKEN)
    assert plain is not None and owner is not None and plain != owner
    assert tokens.admits(TOKEN + "x") is None
    assert tokens.admits(None) is None
    assert tokens.reserved_to_other("owner", plain) == "owner"
    assert tokens.reserved_to_other("OWNER", plain) == "owner"  # compared as §6.2 compares names
    assert tokens.reserved_to_other("owner", owner) is None
    assert tokens.reserved_to_other("someone", plain) is None


def test_only_digests_of_the_tokens_are_kept(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path)
    kept = repr(vars(tokens))
    for token in (TOKEN, OWNER_TOKEN):
        assert token not in kept
        assert token.encode() not in kept.encode()


def test_every_held_digest_is_compared_whichever_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = _tokens(tmp_path, f"{TOKEN}\nsecond-token-0123456789\nthird-token-0123456789\n")
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in (TOKEN, "third-token-0123456789", "nobody-token-0123456789"):
        calls.clear()
        tokens.admits(presented)
        assert len(calls) == 3, f"{len(calls)} comparisons for one of 3 tokens"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("short\n", "16 to 256 characters"),
        (f"a b {TOKEN}\n", "expected TOKEN or NAME TOKEN"),
        (f"alice {TOKEN}\nalice other-token-0123456789\n", "reserved twice"),
        (f"Alice {TOKEN}\nalice other-token-0123456789\n", "collide"),
        (f"has@at {TOKEN}\n", "reserved name"),
        ("# only a comment\n", "no token"),
    ],
)
def test_a_bad_auth_file_is_refused_with_its_line_and_never_its_token(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(AuthFileError) as raised:
        _tokens(tmp_path, text)
    message = str(raised.value)
    assert complaint in message
    assert str(tmp_path / "auth") in message
    assert TOKEN not in message and "other-token" not in message


def test_a_missing_auth_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="no such file"):
        Tokens.load(tmp_path / "absent")


# --- the limiter -------------------------------------------------------------------------------


def test_a_source_is_limited_after_its_burst_and_refills_with_time() -> None:
    limiter = FailureLimiter()
    for attempt in range(AUTH_BURST):
        assert not limiter.limited("192.0.2.1", 100.0), f"limited before failure {attempt + 1}"
        limiter.failed("192.0.2.1", 100.0)
    assert limiter.limited("192.0.2.1", 100.0)
    assert not limiter.limited("192.0.2.2", 100.0), "another source is not limited"
    assert limiter.limited("192.0.2.1", 100.0 + AUTH_REFILL_SECONDS * 0.9)
    assert not limiter.limited("192.0.2.1", 100.0 + AUTH_REFILL_SECONDS)
    limiter.failed("192.0.2.1", 100.0 + AUTH_REFILL_SECONDS)
    assert limiter.limited("192.0.2.1", 100.0 + AUTH_REFILL_SECONDS), "one attempt per refill"
    later = 100.0 + AUTH_REFILL_SECONDS * (AUTH_BURST + 2)
    for _ in range(AUTH_BURST):
        assert not limiter.limited("192.0.2.1", later)
        limiter.failed("192.0.2.1", later)
    assert limiter.limited("192.0.2.1", later), "the bucket holds no more than the burst"


def test_the_limiter_remembers_at_most_its_sources_forgetting_the_oldest() -> None:
    limiter = FailureLimiter(burst=1, max_sources=3)
    for number in range(1, 5):
        limiter.failed(f"192.0.2.{number}", 0.0)
    assert len(limiter) == 3
    assert not limiter.limited("192.0.2.1", 0.0), "the least recently failed source was forgotten"
    assert all(limiter.limited(f"192.0.2.{n}", 0.0) for n in (2, 3, 4))
    assert FailureLimiter().max_sources == AUTH_MAX_SOURCES


def test_ipv6_sources_are_counted_by_their_64() -> None:
    assert source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("192.0.2.7") == "192.0.2.7"


# --- hello.token -------------------------------------------------------------------------------


def test_hello_token_is_optional_typed_and_never_shown() -> None:
    assert Hello("alice").to_wire() == {"type": "hello", "name": "alice"}
    assert Hello("alice", TOKEN).to_wire() == {"type": "hello", "name": "alice", "token": TOKEN}
    assert from_wire({"type": "hello", "name": "a"}, CLIENT_MESSAGES) == Hello("a")
    assert from_wire({"type": "hello", "name": "a", "token": TOKEN}, CLIENT_MESSAGES) == Hello("a", TOKEN)
    for bad in (None, 7, b"bytes"):
        with pytest.raises(RemoteProtocolError) as raised:
            from_wire({"type": "hello", "name": "a", "token": bad}, CLIENT_MESSAGES)
        assert raised.value.code is ErrorCode.BAD_MESSAGE
    assert TOKEN not in repr(Hello("alice", TOKEN)) and TOKEN not in str(Hello("alice", TOKEN))


def test_auth_failed_is_fatal() -> None:
    assert FATAL[ErrorCode.AUTH_FAILED] is True


# --- the core with access control --------------------------------------------------------------


def _server(tmp_path: Path) -> MemoryServer:
    core = ServerCore(CODEC, server_name="test/1", access=Access(_tokens(tmp_path)))
    return MemoryServer(core, now=1000.0)


def _answers(server: MemoryServer, client: int) -> list[object]:
    decoder = FrameDecoder()
    decoder.feed(server.read(client))
    answers: list[object] = []
    while (payload := decoder.next_frame()) is not None:
        answers.append(from_wire(CODEC.decode(payload), SERVER_MESSAGES))
    return answers


def _hello(
    server: MemoryServer, name: str, token: str | None, host: str = "192.0.2.1"
) -> tuple[int, list[object]]:
    client = server.connect(host)
    server.receive(client, encode_message(CODEC, Hello(name, token)))
    return client, _answers(server, client)


def _codes(answers: list[object]) -> list[tuple[str, bool]]:
    return [(a.code, a.fatal) for a in answers if isinstance(a, Error)]


def test_the_right_token_joins_a_missing_or_wrong_one_is_auth_failed_and_closed(tmp_path: Path) -> None:
    server = _server(tmp_path)
    _, answers = _hello(server, "alice", TOKEN)
    assert isinstance(answers[0], Welcome)
    for token in (None, "wrong-token-0123456789"):
        refused, answers = _hello(server, "bob", token)
        assert _codes(answers) == [("auth_failed", True)]
        assert server.closed[refused] is True, "closed by §9.4"
    assert len(server.core.room) == 1


def test_the_name_is_judged_before_the_token_and_the_room_after_it(tmp_path: Path) -> None:
    server = _server(tmp_path)
    _hello(server, "alice", TOKEN)
    assert _codes(_hello(server, "has space", None)[1]) == [("name_invalid", False)]
    # A member's name without a token: auth_failed, so the room is not told to strangers.
    assert _codes(_hello(server, "alice", None)[1]) == [("auth_failed", True)]
    assert _codes(_hello(server, "alice", TOKEN)[1]) == [("name_taken", False)]


def test_a_reserved_name_needs_its_own_token(tmp_path: Path) -> None:
    server = _server(tmp_path)
    client, answers = _hello(server, "Owner", TOKEN)
    assert _codes(answers) == [("name_taken", False)], "reserved to another token: name_taken, non-fatal"
    server.receive(client, encode_message(CODEC, Hello("guest", TOKEN)))
    assert isinstance(_answers(server, client)[0], Welcome), "the same connection joins under another name"
    assert isinstance(_hello(server, "owner", OWNER_TOKEN)[1][0], Welcome)
    assert isinstance(_hello(server, "somebody", OWNER_TOKEN)[1][0], Welcome), "its token admits other names"


def test_a_limited_source_is_refused_without_its_token_being_checked(tmp_path: Path) -> None:
    server = _server(tmp_path)
    for _ in range(AUTH_BURST):
        assert _codes(_hello(server, "guess", "wrong-token-0123456789")[1]) == [("auth_failed", True)]
    assert _codes(_hello(server, "alice", TOKEN)[1]) == [("auth_failed", True)]
    assert isinstance(_hello(server, "alice", TOKEN, host="192.0.2.9")[1][0], Welcome), "another source"
    server.advance(AUTH_REFILL_SECONDS)  # the core's clock, passed in: no clock is read
    assert isinstance(_hello(server, "bob", TOKEN)[1][0], Welcome)


def test_tokens_are_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = _server(tmp_path)
    wrong = "wrong-token-0123456789"
    _hello(server, "alice", TOKEN)
    _hello(server, "owner", TOKEN)
    _hello(server, "bob", wrong)
    for _ in range(AUTH_BURST):
        _hello(server, "carol", wrong)
    _hello(server, "dave", OWNER_TOKEN)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "auth_failed" in text and "joined as alice" in text
    for token in (TOKEN, OWNER_TOKEN, wrong):
        assert token not in text
