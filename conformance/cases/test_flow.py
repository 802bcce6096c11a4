"""Ordering under bursts, and slow consumers cut off while the others keep receiving (§10, §11)."""

from __future__ import annotations

from protocol import Error, Joined, Left, Relayed, Say
from protocol.constants import ErrorCode

from ..context import Context, joined, left, relayed
from ..registry import MUST, Settings, case
from ..wire import WirePeer

#: The output cap of the server in the slow-consumer case: small, so that the case is quick.
SLOW_CAP = 256 * 1024
#: Says per flood batch. The witness reads only between batches, so a batch stays well
#: under the cap: the witness must not become a slow consumer itself.
BATCH = 8
#: Give up after relaying this much to the slow consumer (kernel buffers absorb some megabytes).
SLOW_GIVE_UP = 96 << 20


def _texts(receiver: WirePeer, count: int, sender: str | None = None) -> list[str]:
    out = []
    for _ in range(count):
        message = receiver.expect(
            lambda m: isinstance(m, Relayed) and (sender is None or m.name == sender), what="a message"
        )
        out.append(message.text)
    return out


@case("ORDER-BURST", "11", MUST, "500 says sent in a burst reach each other member complete and in order")
def test_order_burst(ctx: Context) -> None:
    sender, first, second = ctx.members("sender", "first", "second")
    texts = [f"{i:04d} burst" for i in range(500)]
    for start in range(0, 500, 100):
        sender.send_values([Say(t).to_wire() for t in texts[start : start + 100]])
    for receiver in (first, second):
        got = _texts(receiver, 500)
        assert got == texts, f"{receiver.label}: per-sender order broken: {_first_diff(texts, got)}"


@case(
    "ORDER-TWO-SENDERS",
    "11",
    MUST,
    "two senders bursting at once: each sender's messages stay in order (interleaving free)",
)
def test_order_two_senders(ctx: Context) -> None:
    one, two, receiver = ctx.members("one", "two", "receiver")
    texts = {peer.name: [f"{peer.label} {i:03d}" for i in range(200)] for peer in (one, two)}
    for start in range(0, 200, 50):
        for peer in (one, two):
            peer.send_values([Say(t).to_wire() for t in texts[peer.name][start : start + 50]])
    got: dict[str, list[str]] = {one.name: [], two.name: []}
    for _ in range(400):
        message = receiver.expect(lambda m: isinstance(m, Relayed), what="a message")
        got[message.name].append(message.text)
    for name, sent in texts.items():
        assert got[name] == sent, f"messages of {name!r} out of order: {_first_diff(sent, got[name])}"


@case(
    "ORDER-JOINED-LEFT-BRACKET",
    "11",
    MUST,
    "a member's joined comes before its messages, its left after all of them",
)
def test_order_joined_left_bracket(ctx: Context) -> None:
    observer = ctx.member("observer")
    name = ctx.name("brief")
    peer = ctx.peer("brief")
    texts = [f"brief {i}" for i in range(10)]
    peer.send_values([{"type": "hello", "name": name}, *(Say(t).to_wire() for t in texts)])
    peer.half_close()
    peer.wait_closed()
    seen = []
    while True:
        item = observer.expect(
            lambda m: isinstance(m, Joined | Relayed | Left) and m.name == name, what="notices"
        )
        seen.append(item)
        if isinstance(item, Left):
            break
    kinds = [type(m).__name__ for m in seen]
    assert kinds == ["Joined"] + ["Relayed"] * 10 + ["Left"], (
        f"expected joined, 10 messages, left; got {kinds}"
    )
    assert [m.text for m in seen[1:-1]] == texts


@case(
    "SLOW-CONSUMER",
    "10",
    MUST,
    "a member that stops reading is cut off (left slow_consumer) while the others keep receiving everything",
    also=("8.1", "8.7", "11"),
    settings=Settings(max_output_buffer=SLOW_CAP),
)
def test_slow_consumer(ctx: Context) -> None:
    sender, witness = ctx.members("sender", "witness")
    victim = ctx.member("victim", rcvbuf=4096)
    witness.expect(joined(victim.name))
    sender.expect(joined(victim.name))
    flood_until_cut(ctx, (sender, witness, victim), "s" * 8000, SLOW_GIVE_UP, f"max_output_buffer {SLOW_CAP}")


def flood_until_cut(
    ctx: Context, peers: tuple[WirePeer, WirePeer, WirePeer], text: str, give_up: int, bounds: str
) -> None:
    """Of ``peers``, ``sender`` says ``text`` in batches, ``witness`` reads every one, ``victim`` reads
    nothing: it must be cut off as a slow consumer before ``give_up`` octets are relayed, the
    witness losing nothing, and the room must go on after the cut (§10)."""
    sender, witness, victim = peers
    relayed_bytes = 0
    sequence = 0
    while not any(isinstance(m, Left) and m.name == victim.name for m in witness.inbox):
        assert relayed_bytes < give_up, (
            f"after {relayed_bytes >> 20} MiB relayed to a member that reads nothing, it is still not "
            f"cut off ({bounds})"
        )
        batch = [f"{sequence + i:06d} {text}" for i in range(BATCH)]
        sequence += len(batch)
        sender.send_values([Say(t).to_wire() for t in batch])
        got = _texts(witness, len(batch), sender.name)
        assert got == batch, f"the witness lost messages during the flood: {_first_diff(batch, got)}"
        relayed_bytes += len(batch) * len(text)
    ctx.transcript.note(f"the victim was cut off after {relayed_bytes} octets of text were relayed")
    gone = witness.expect(left(victim.name))
    assert (gone.reason, gone.clients) == ("slow_consumer", 2), (
        f"expected left slow_consumer, clients 2: {gone!r}"
    )
    sender.send(Say("after the cut"))
    witness.expect(relayed("after the cut", sender.name), what="messages keep flowing after the cut")
    rest = victim.wait_closed(ctx.timeout(10))
    errors = [m for m in rest if isinstance(m, Error)]
    assert all((e.code, e.fatal) == (ErrorCode.SLOW_CONSUMER, True) for e in errors), (
        f"the victim may get error slow_consumer (fatal) or nothing, got {errors!r}"
    )


def _first_diff(expected: list[str], got: list[str]) -> str:
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"at {index}: expected {a[:40]!r}, got {b[:40]!r}"
    return f"expected {len(expected)} items, got {len(got)}"
