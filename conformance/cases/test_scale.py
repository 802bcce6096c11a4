"""More simultaneous members than select() can watch (§8.1, §14.2)."""

from __future__ import annotations

from protocol import Hello, Roster, Say, Welcome, Who

from ..context import Context, relayed
from ..registry import MUST, case

#: Past FD_SETSIZE (1024): a server built on select() alone fails here.
CLIENTS = 1100


@case(
    "SCALE-1100-CLIENTS",
    "8.1",
    MUST,
    f"{CLIENTS} simultaneous members join with distinct counts, all listed, all reached",
    also=("14.2",),
    isolated=True,
)
def test_scale_many_clients(ctx: Context) -> None:
    peers = []
    names = [ctx.name("c") for _ in range(CLIENTS)]
    counts = []
    # One join at a time: each welcome is read before later joined notices pile up behind it,
    # so this side decodes n frames, not the n * n / 2 the server fans out. Each connection is
    # opened just before its hello, so that none waits for the others' joins: on a slow machine
    # 1100 joins can take longer than the server's hello timeout.
    for index, name in enumerate(names):
        peer = ctx.peer(f"c{index}")
        peers.append(peer)
        peer.send(Hello(name))
        welcome = peer.expect(Welcome, timeout=ctx.timeout(30))
        counts.append(welcome.clients)
    assert counts == list(range(1, CLIENTS + 1)), (
        f"welcome.clients over {CLIENTS} successive joins must be 1..{CLIENTS}; first difference "
        f"{next(((i + 1, c) for i, c in enumerate(counts) if c != i + 1), None)}"
    )
    asker = peers[0]
    asker.send(Who())
    roster = asker.expect(Roster, timeout=ctx.timeout(30))
    assert sorted(m.name for m in roster.members) == sorted(names) and not roster.truncated, (
        f"the roster lists {len(roster.members)} of {CLIENTS} members"
    )
    speaker = peers[-1]
    speaker.send(Say("to the crowd"))
    for peer in peers[:: CLIENTS // 10]:
        peer.expect(relayed("to the crowd", names[-1]), timeout=ctx.timeout(30))
