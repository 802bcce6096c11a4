"""A room served by several nodes (§18): node death, Redis restart, name races, one view.

These run only against a cluster (``--cluster-nodes N``, §16.2). Each case places its
connections on chosen nodes; every other case of the suite spreads its own over the nodes.
"""

from __future__ import annotations

import time

from protocol import Error, Hello, Joined, Left, Relayed, Roster, Say, Shutdown, Welcome, Who
from protocol.constants import CLUSTER_DEPARTURE_BOUND, CLUSTER_RECOVERY_BOUND, ErrorCode, LeaveReason

from ..cluster import Cluster
from ..context import Context, joined, relayed
from ..registry import MUST, case
from ..wire import Received, WirePeer, WireTimeout

#: Rounds of the name race: each is two hellos for one name on two nodes at once.
RACE_ROUNDS = 30
#: Members per node in the node-death and Redis cases.
PER_NODE = 3


def _cluster(ctx: Context) -> Cluster:
    assert ctx.cluster is not None, "a cluster case runs against a cluster only"
    return ctx.cluster


def _on(ctx: Context, node: int, label: str, name: str | None = None) -> WirePeer:
    """A member joined on node ``node``."""
    peer = ctx.peer(f"{label}@node{node}", address=_cluster(ctx).addresses[node])
    peer.join(name or ctx.name(label))
    return peer


def _welcome_or_error(message: Received) -> bool:
    return isinstance(message, Welcome | Error)


def _roster(peer: WirePeer) -> list[tuple[str, str]]:
    peer.send(Who())
    roster = peer.expect(Roster, what="roster")
    assert not roster.truncated, f"{peer.label}: the roster of a small room is truncated"
    return sorted((m.name, m.host) for m in roster.members)


def _same_rosters(peers: list[WirePeer]) -> list[tuple[str, str]]:
    """Every peer's roster, which must be one and the same; returns it."""
    views = {peer.label: _roster(peer) for peer in peers}
    first = next(iter(views.values()))
    differing = {label: view for label, view in views.items() if view != first}
    assert not differing, f"the nodes list different rosters: {views!r}"
    return first


@case(
    "CLUSTER-NODE-DEATH",
    "18.5",
    MUST,
    "kill -9 of a node: the others send left for each of its members once, within "
    "CLUSTER_DEPARTURE_BOUND, and the names are free again",
    also=("8.7", "18.2"),
    isolated=True,
    stops_server=True,
    cluster_only=True,
)
def test_cluster_node_death(ctx: Context) -> None:
    cluster = _cluster(ctx)
    victim = cluster.count - 1
    watchers = [_on(ctx, node, "watcher") for node in range(victim)]
    doomed = [_on(ctx, victim, f"doomed{i}") for i in range(PER_NODE)]
    ctx.settle(*doomed, *watchers)
    for peer in watchers:
        peer.inbox.clear()
    names = {peer.name for peer in doomed}
    ctx.transcript.note(f"kill -9 node {victim}")
    killed_at = time.monotonic()
    cluster.kill_node(victim)
    # §18.5: the bound, plus the time to apply the log (one second here).
    bound = ctx.timeout(CLUSTER_DEPARTURE_BOUND + 1)
    reasons = {reason.value for reason in LeaveReason}
    for peer in watchers:
        announced: list[Left] = []
        while {notice.name for notice in announced} != names:
            waited = time.monotonic() - killed_at
            remaining = bound - waited
            assert remaining > 0, (
                f"{peer.label}: {CLUSTER_DEPARTURE_BOUND} s after node {victim} was killed, left came for "
                f"{sorted(n.name for n in announced)} of {sorted(names)}"
            )
            try:
                notice = peer.expect(Left, timeout=remaining, what="left for the dead node's members")
                announced.append(notice)
            except WireTimeout:
                continue
        later = [m for m in peer.barrier() if isinstance(m, Left)]
        names_seen = [notice.name for notice in announced + later]
        assert sorted(names_seen) == sorted(names), (
            f"{peer.label}: each departure is announced once; got left for {names_seen!r}"
        )
        counts = [notice.clients for notice in announced]
        expected = list(range(len(watchers) + len(names) - 1, len(watchers) - 1, -1))
        assert counts == expected, f"{peer.label}: left.clients must count down {expected}, got {counts}"
        odd = [notice for notice in announced if notice.reason not in reasons]
        assert not odd, f"{peer.label}: left.reason must be one of {sorted(reasons)}: {odd!r}"
    ctx.transcript.note(f"every left within {time.monotonic() - killed_at:.2f} s of the kill")
    again = _on(ctx, 0, "again", name=doomed[0].name)
    for peer in watchers:
        peer.expect(joined(again.name), what="joined for the free name")
    assert len(_same_rosters([*watchers, again])) == len(watchers) + 1


@case(
    "CLUSTER-NAME-RACE",
    "18.2",
    MUST,
    f"one name sent in hello to two nodes at the same instant, {RACE_ROUNDS} rounds: exactly one wins",
    also=("6.2",),
    isolated=True,
    cluster_only=True,
)
def test_cluster_name_race(ctx: Context) -> None:
    cluster = _cluster(ctx)
    observer = _on(ctx, 0, "observer")
    for round_number in range(RACE_ROUNDS):
        first_node = round_number % cluster.count
        second_node = (round_number + 1) % cluster.count
        name = ctx.name("race")
        # Every other round the second hello differs in case only: the key (§6.2) collides.
        rival_name = name.upper() if round_number % 2 else name
        contenders = [
            ctx.peer(f"race{round_number}a@node{first_node}", address=cluster.addresses[first_node]),
            ctx.peer(f"race{round_number}b@node{second_node}", address=cluster.addresses[second_node]),
        ]
        contenders[0].send(Hello(name))
        contenders[1].send(Hello(rival_name))
        replies = [peer.expect(_welcome_or_error, what="welcome or error") for peer in contenders]
        won = [reply for reply in replies if isinstance(reply, Welcome)]
        winners = [peer for peer, reply in zip(contenders, replies, strict=True) if reply in won]
        assert len(won) == 1, (
            f"round {round_number}: {name!r} on nodes {first_node} and {second_node}: {replies!r}"
        )
        lost = next(reply for reply in replies if isinstance(reply, Error))
        assert (lost.code, lost.fatal) == (ErrorCode.NAME_TAKEN, False), (
            f"round {round_number}: the loser must get name_taken (non-fatal), got {lost!r}"
        )
        seen = [m for m in ctx.settle(*winners, observer)[1] if isinstance(m, Joined)]
        assert [m.name for m in seen] == [won[0].name], (
            f"round {round_number}: the observer must see one joined, for the winner: {seen!r}"
        )
        for peer in contenders:
            ctx.close_gracefully(peer)
        observer.expect(Left, what="left for the round's winner")


def _story(received: list[Received], sender: str) -> list[tuple[str, str]]:
    """What a member saw of the room's joins, leaves and ``sender``'s messages, in order."""
    story = []
    for message in received:
        if isinstance(message, Relayed) and message.name == sender:
            story.append(("message", message.text))
        elif isinstance(message, Joined):
            story.append(("joined", message.name))
        elif isinstance(message, Left):
            story.append(("left", message.name))
    return story


@case(
    "CLUSTER-SAME-VIEW",
    "18.2",
    MUST,
    "members on different nodes see the same counts, rosters, and joins and leaves in the same "
    "place among a sender's messages",
    also=("8.2", "8.5", "11"),
    isolated=True,
    cluster_only=True,
)
def test_cluster_same_view(ctx: Context) -> None:
    cluster = _cluster(ctx)
    members: list[WirePeer] = []
    for index in range(2 * cluster.count):
        peer = _on(ctx, index % cluster.count, f"m{index}")
        assert peer.welcome is not None and peer.welcome.clients == index + 1, (
            f"welcome.clients of the {index + 1}th member (node {index % cluster.count}): {peer.welcome!r}"
        )
        for earlier in members:
            notice = earlier.expect(joined(peer.name))
            assert notice.clients == index + 1, f"{earlier.label}: joined.clients {notice!r}"
        members.append(peer)
    ctx.settle(*members)
    sender, leaver, *watchers = members
    sender.send(Say("before"))
    sender.barrier()
    newcomer = _on(ctx, cluster.count - 1, "newcomer")
    sender.barrier()
    sender.send(Say("between"))
    sender.barrier()
    ctx.close_gracefully(leaver)
    sender.barrier()
    sender.send(Say("after"))
    sender.barrier()
    whole = [("message", "before"), ("joined", newcomer.name), ("message", "between")]
    whole += [("left", leaver.name), ("message", "after")]
    for peer in watchers:
        story = _story(peer.barrier(), sender.name)
        assert story == whole, f"{peer.label}: saw {story!r}, the room was {whole!r}"
    story = _story(newcomer.barrier(), sender.name)
    assert story == whole[2:], f"{newcomer.label}: saw {story!r}, expected {whole[2:]!r}"
    roster = _same_rosters([sender, *watchers, newcomer])
    assert sorted(name for name, _ in roster) == sorted(p.name for p in (sender, *watchers, newcomer))


@case(
    "CLUSTER-REDIS-RESTART",
    "18.6",
    MUST,
    "Redis restarted empty: every member gets shutdown and the close within CLUSTER_RECOVERY_BOUND, "
    "no node dies, and every node then serves the new room",
    also=("18.1",),
    isolated=True,
    cluster_only=True,
)
def test_cluster_redis_restart(ctx: Context) -> None:
    cluster = _cluster(ctx)
    members = [_on(ctx, node, f"m{i}") for node in range(cluster.count) for i in range(PER_NODE)]
    ctx.settle(*members)
    for peer in members:
        peer.inbox.clear()
    ctx.transcript.note("restarting redis-server (empty: no persistence)")
    restarted_at = time.monotonic()
    cluster.redis.restart()
    deadline = restarted_at + ctx.timeout(CLUSTER_RECOVERY_BOUND)
    for peer in members:
        notice = peer.expect(Shutdown, timeout=max(0.0, deadline - time.monotonic()), what="shutdown")
        ctx.transcript.note(f"{peer.label}: shutdown {notice.reason!r}")
        peer.wait_closed(max(0.0, deadline - time.monotonic()) + ctx.timeout(2))
    ctx.transcript.note(f"every member told within {time.monotonic() - restarted_at:.2f} s")
    assert cluster.alive(), f"a node died: {cluster.deaths()}"
    newcomers = [_join_when_served(ctx, node, deadline) for node in range(cluster.count)]
    counts = sorted(peer.welcome.clients for peer in newcomers if peer.welcome is not None)
    assert counts == list(range(1, cluster.count + 1)), f"the new room's welcome.clients: {counts}"
    ctx.settle(*newcomers)
    speaker, *listeners = newcomers
    speaker.send(Say("in the new room"))
    for peer in listeners:
        peer.expect(relayed("in the new room", speaker.name))
    _same_rosters(newcomers)


def _join_when_served(ctx: Context, node: int, deadline: float) -> WirePeer:
    """A member of node ``node``'s room, asking again while the node answers hello with shutdown.

    §18.6 rule 2: a node that is not back yet answers each hello with shutdown at once.
    """
    attempt = 0
    while True:
        peer = ctx.peer(f"newcomer{attempt}@node{node}", address=_cluster(ctx).addresses[node])
        name = ctx.name("newcomer")
        peer.send(Hello(name))
        reply = peer.expect(lambda m: isinstance(m, Welcome | Shutdown), what="welcome (or shutdown)")
        if isinstance(reply, Welcome):
            peer.welcome = reply
            return peer
        peer.close()
        attempt += 1
        assert time.monotonic() < deadline, (
            f"node {node} still answers hello with shutdown {CLUSTER_RECOVERY_BOUND} s after the restart"
        )


@case(
    "CLUSTER-HELLO-PIPELINED",
    "18.4",
    MUST,
    "hello and say in one write: the say is relayed after the joined on other nodes, or answered "
    "hello_required when the hello is refused",
    also=("7.1", "11"),
    isolated=True,
    cluster_only=True,
)
def test_cluster_hello_pipelined(ctx: Context) -> None:
    cluster = _cluster(ctx)
    watcher = _on(ctx, cluster.count - 1, "watcher")
    newcomer = ctx.peer("newcomer@node0", address=cluster.addresses[0])
    name = ctx.name("newcomer")
    frames = [newcomer.frame(message.to_wire()) for message in (Hello(name), Say("right after hello"))]
    newcomer.send_raw(b"".join(frames), "hello and say in one write")
    welcome = newcomer.expect(_welcome_or_error, what="welcome")
    assert isinstance(welcome, Welcome), f"hello {name!r} refused: {welcome!r}"
    newcomer.welcome = welcome
    story = _story(ctx.settle(newcomer, watcher)[1], name)
    assert story == [("joined", name), ("message", "right after hello")], (
        f"{watcher.label}: expected joined for {name!r}, then its message; got {story!r}"
    )
    refused = ctx.peer("refused@node0", address=cluster.addresses[0])
    frames = [refused.frame(message.to_wire()) for message in (Hello(watcher.name), Say("not a member"))]
    refused.send_raw(b"".join(frames), "a taken name's hello and a say in one write")
    refused.expect_error(ErrorCode.NAME_TAKEN, fatal=False)
    refused.expect_error(ErrorCode.HELLO_REQUIRED, fatal=True)
    heard = [m for m in ctx.settle(newcomer, watcher)[1] if isinstance(m, Relayed)]
    assert not heard, f"{watcher.label}: a refused hello's say was relayed: {heard!r}"
