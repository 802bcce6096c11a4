"""One room across many servers, sans I/O: the rules of a node of a clustered room (spec §18).

:class:`ClusterRules` is a :class:`~protocol.server.ServerRules` whose room lives in Redis: every
join, say and leave is *proposed* to a Lua script (:mod:`protocol.cluster.scripts`) that decides
it atomically and appends it to the room's log, a Redis Stream. Every node reads the log in
order and acts only when it applies an entry, the proposer included: a welcome or ``name_taken``
for its own joins, ``joined``/``message``/``left`` for its local members. So every member of
every node sees the same sequence, as one server would send it.

Its two :class:`~protocol.cluster.link.RedisLink`\\ s (commands, and the blocking log read) are
driven by the server like sockets; what applying the log decides comes out of
:meth:`ClusterRules.take_actions` (:meth:`ServerCore.settle <protocol.server.ServerCore.settle>`).
Timers (lease refreshes, reconnects, the resume bound) are the core's, through
:meth:`next_deadline` and :meth:`expire`.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import hiredis

from ..codecs import Codec
from ..connection import RelayEncoder, encode_message
from ..constants import (
    CLUSTER_DOWN_REASON,
    CLUSTER_GAP_REASON,
    CLUSTER_HELD_INPUT,
    CLUSTER_HELD_REASON,
    CLUSTER_LEASE_REFRESH,
    CLUSTER_LEASE_TTL,
    CLUSTER_LOG_MAXLEN,
    CLUSTER_LOST_REASON,
    CLUSTER_READ_BLOCK,
    CLUSTER_READ_COUNT,
    CLUSTER_RESET_REASON,
    CLUSTER_RESUME_BOUND,
    DEFAULT_HOLD_MARK,
    DEFAULT_MAX_FRAME,
    DEFAULT_ROOM,
    HEADER_SIZE,
    PROTOCOL_VERSION,
    SHUTDOWN_FLUSH_TIMEOUT,
    ErrorCode,
    LeaveReason,
)
from ..errors import ProtocolError, RemoteProtocolError
from ..logtext import escape
from ..messages import Hello, Joined, Left, Ping, Say, Shutdown, Welcome, Who
from ..names import name_key, name_skeleton
from ..server.access import Access
from ..server.room import Seat
from ..server.rules import Action, ClientId, Close, Relay, Send, ServerRules, Stop, _Client
from .link import Callback, LinkState, RedisLink, Reply
from .scripts import SCRIPTS

log = logging.getLogger("protocol.cluster")

#: Says of one connection proposed in one script at most, and their octets: one script call
#: stays a bounded command for Redis to read.
_SAYS_PER_PROPOSAL = 256
_SAY_OCTETS_PER_PROPOSAL = 1 << 20
#: Exclude nobody: client ids start at 1.
_NOBODY: ClientId = 0


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where the room's Redis is: ``redis://HOST:PORT/DB``."""

    host: str
    port: int
    db: int

    @classmethod
    def parse(cls, url: str) -> ClusterAddress:
        """Raises ``ValueError`` for anything but ``redis://HOST[:PORT][/DB]``."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError(f"not a redis://HOST:PORT/DB address: {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"only redis://HOST:PORT/DB is understood: {url!r}")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database must be a number: {url!r}")
        port = parts.port  # ValueError when out of range
        return cls(parts.hostname, 6379 if port is None else port, int(path) if path else 0)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


@dataclass(slots=True)
class _Member:
    """A member of the room as the log tells it, on any node."""

    seat: Seat
    relay: RelayEncoder
    client: ClientId | None  # the local connection, if it is this node's


@dataclass(slots=True)
class _Proposal:
    number: int
    script: str
    args: tuple[bytes | str | int, ...]


def _text_octets(proposal: _Proposal) -> int:
    """The octets of text a ``say`` proposal carries (its arguments after the client id)."""
    return sum(len(text) for text in proposal.args[1:] if isinstance(text, bytes))


def _text(value: bytes) -> str:
    # Texts may hold lone surrogates (pickle, §4.3); they travel through Redis as such.
    return value.decode("utf-8", "surrogatepass")


def _octets(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


class ClusterRules(ServerRules):
    """The rules of one node of a clustered room; the room itself is Redis' (§18)."""

    def __init__(
        self,
        codec: Codec,
        *,
        server_name: str,
        address: ClusterAddress,
        room: str = DEFAULT_ROOM,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_held_input: int = CLUSTER_HELD_INPUT,
        say_window: int = DEFAULT_HOLD_MARK,
        access: Access | None = None,
    ) -> None:
        super().__init__(codec, server_name=server_name, max_frame=max_frame, access=access)
        self.address = address
        self.room_name = room
        self.max_held_input = max_held_input
        #: Octets of text this node may have proposed and not yet applied before its says wait
        #: (§18.2): so a member it sees hold the room comes in time to hold its senders (§10.1).
        self.say_window = say_window
        # Octets of text proposed and not yet applied (or refused), per member and in all; a
        # member's part is forgotten when it departs, whatever becomes of its proposals.
        self._unapplied: dict[ClientId, int] = {}
        self._unapplied_total = 0
        self._holders: set[bytes] = set()  # members of other nodes that hold says (§18.2)
        self._released: list[ClientId] = []  # held input that may be handled again
        # One hash tag for all of a room's keys: a Redis Cluster would keep them on one shard.
        self.prefix = f"chatwire:{{{room}}}:"
        self._keys = tuple(
            self.prefix + name for name in ("epoch", "seq", "log", "members", "names", "dedup", "holders")
        )
        self.commands = RedisLink("command", address.host, address.port, address.db)
        self.reader = RedisLink("log", address.host, address.port, address.db)
        self.links = (self.commands, self.reader)
        for link in self.links:
            link.on_up = self._link_up
            link.on_down = self._link_down
        self.node = secrets.token_hex(8)
        self._member_prefix = f"{self.node}:".encode()  # of this node's member ids
        self.epoch: bytes | None = None  # the room's, once a snapshot is loaded
        self.applied = 0  # the sequence number of the last entry applied
        self.last_id = b"0-0"  # and its Stream id
        self.members: dict[bytes, _Member] = {}  # the whole room, in join order
        self._local: dict[ClientId, bytes] = {}  # this node's members (and joiners): their member ids
        self._ready = False  # snapshot loaded (or resumed) and the log being read
        self._reading = False
        self._generation = 0  # of log reads: a restart makes the read under way stale
        self._proposals: deque[_Proposal] = deque()  # not yet acknowledged, in order
        self._number = 0
        self._says: dict[ClientId, list[bytes]] = {}  # texts not yet proposed, per connection
        self._say_octets = 0  # and their octets
        self._joining: dict[ClientId, str] = {}  # hellos proposed, not yet decided
        self._syncing: dict[ClientId, Ping | Who] = {}  # held until the log reaches a point
        self._sync_at: dict[ClientId, int] = {}  # that point, once Redis said it
        self._actions: list[Action] = []
        self._welcomed: list[ClientId] = []  # welcomed since take_welcomed() last asked
        self._now = 0.0
        self._lease_due = 0.0
        self._down_since: float | None = None  # since when the links are down (from the start on)
        self._started = False
        self._unavailable = False  # down past the resume bound: hellos are refused (§18.6)
        self._abandoned: list[str] = []  # node ids of ours whose members must be removed
        self._stopping = False
        self._stop_by: float | None = None
        self._departed = False

    # --- what the core asks ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self._started:
            return 0.0  # expire() at once: it tells the rules the time and connects the links
        deadlines = [d for d in (link.next_deadline() for link in self.links) if d is not None]
        if self._stopping:
            if not self.settled:
                deadlines.append(self._now if self._stop_by is None else self._stop_by)
        elif self._ready:
            deadlines.append(self._lease_due)
        elif self._down_since is not None and not self._unavailable:
            deadlines.append(self._down_since + CLUSTER_RESUME_BOUND)
        return min(deadlines) if deadlines else None

    def expire(self, now: float) -> list[Action]:
        self._tick(now)
        for link in self.links:
            link.expire(now)
        if self._stopping:
            if self._stop_by is None:
                self._stop_by = now + SHUTDOWN_FLUSH_TIMEOUT
        elif self._ready and now >= self._lease_due:
            self._refresh_lease(now)
        elif (
            not self._ready
            and not self._unavailable
            and self._down_since is not None
            and now >= self._down_since + CLUSTER_RESUME_BOUND
        ):
            log.error(
                "no cluster link for %.1f s: closing %d local connections of the room; "
                "hellos are refused until Redis is back",
                now - self._down_since,
                len(self._local),
            )
            self._restart(CLUSTER_LOST_REASON)
            self._unavailable = True
        return self.take_actions()

    def take_actions(self) -> list[Action]:
        self._flush_says()
        actions, self._actions = self._actions, []
        return actions

    def take_welcomed(self) -> list[ClientId]:
        welcomed, self._welcomed = self._welcomed, []
        return welcomed

    @property
    def settled(self) -> bool:
        if not self._stopping:
            return True
        if self._departed or not self._ready:
            return True
        return self._stop_by is not None and self._now >= self._stop_by

    # --- the Redis links' events, from the server ---------------------------------------------

    def link_connected(self, link: RedisLink, now: float) -> None:
        """``link``'s socket is open. Then :meth:`ServerCore.settle`, as after each of these."""
        self._tick(now)
        link.connected(now)

    def link_received(self, link: RedisLink, data: bytes, now: float) -> None:
        """Octets from ``link``'s socket; ``b""`` is its end of stream."""
        self._tick(now)
        link.receive(data, now)

    def link_failed(self, link: RedisLink, now: float, why: str) -> None:
        """``link``'s socket failed or could not be opened; the server has closed it."""
        self._tick(now)
        link.lost(now, why)

    # --- connection events -------------------------------------------------------------------

    def receive(
        self,
        client: ClientId,
        data: bytes,
        now: float = 0.0,
        budget: int = 1 << 62,
        hold_says: bool = False,
    ) -> list[Action]:
        state = self._clients.get(client)
        if state is not None and state.held:
            self.stop = Stop.DONE  # for the core: nothing of it is left for a later turn
            self.spent = 0
            state.connection.receive_data(data)
            if state.connection.buffered > self.max_held_input:
                log.warning("connection %d: over %d octets of input held", client, self.max_held_input)
                self._cut(client, CLUSTER_HELD_REASON, self._actions)
            return self.take_actions()
        actions = super().receive(client, data, now, budget, hold_says)
        return actions + self.take_actions() if self._actions or self._says else actions

    def resume(
        self, client: ClientId, now: float = 0.0, budget: int = 1 << 62, hold_says: bool = False
    ) -> list[Action]:
        state = self._clients.get(client)
        if state is not None and state.held:
            self.stop = Stop.DONE  # held for the log again: released once more when it decides
            self.spent = 0
            return self.take_actions()
        actions = super().resume(client, now, budget, hold_says)
        return actions + self.take_actions() if self._actions or self._says else actions

    def shutdown(self) -> list[Action]:
        actions = super().shutdown()
        self._joining.clear()
        self._syncing.clear()
        self._sync_at.clear()
        self._says.clear()
        self._say_octets = 0
        if not self._stopping:
            self._stopping = True
            for link in self.links:
                link.stop()
            if self._ready:
                # Our members leave the room for the other nodes at once, not at lease expiry.
                self._reap((self.node, *self._abandoned), force=True, done=self._depart_done)
            log.info("leaving the room: node %s", self.node)
        return actions

    def _depart_done(self, reply: Reply) -> None:
        self._departed = True

    # --- the protocol, where a cluster differs -----------------------------------------------

    def _handle(self, client: ClientId, state: _Client, message: object, actions: list[Action]) -> None:
        if isinstance(message, Say):
            if self._relay_frame(client, state, message, actions) is None:
                return
            says = self._says.setdefault(client, [])
            text = _octets(message.text)
            says.append(text)
            self._say_octets += len(text)
            if len(says) >= _SAYS_PER_PROPOSAL or self._say_octets >= _SAY_OCTETS_PER_PROPOSAL:
                self._flush_says()
        elif isinstance(message, Ping | Who):
            # Answered once this node has applied the log as far as Redis had it when asked, so
            # a pong is a barrier across nodes as on one server (§18.2).
            self._flush_says()
            state.held = True
            self._syncing[client] = message
            self._ask_position(client)
        else:
            super()._handle(client, state, message, actions)

    def _join(self, client: ClientId, state: _Client, hello: Hello, actions: list[Action]) -> None:
        name = hello.name
        try:
            self._admit(state, hello)
        except RemoteProtocolError as exc:
            self._refuse(client, exc, actions)
            return
        if self._unavailable:
            self._cut(client, CLUSTER_LOST_REASON, actions)
            return
        state.held = True  # until the log decides (§18.4)
        self._joining[client] = name
        self._local[client] = f"{self.node}:{client}".encode()
        self._propose(
            "join", (client, _octets(name), state.host, _octets(name_key(name)), _octets(name_skeleton(name)))
        )

    def _drop(self, client: ClientId, reason: LeaveReason, actions: list[Action]) -> None:
        state = self._clients.pop(client, None)
        if state is None:
            return
        self._syncing.pop(client, None)
        self._sync_at.pop(client, None)
        joining = self._joining.pop(client, None) is not None
        if client in self.room or joining:
            self._flush_says()
            self._unapplied_total -= self._unapplied.pop(client, 0)
            self.room.leave(client)
            # Announced when the log says so: after every say it proposed, and after its join
            # if that was still undecided (a join refused makes this a no-op).
            self._propose("leave", (client, reason.value))
            log.info("connection %d leaving: %s", client, reason.value)
        else:
            log.info("connection %d from %s closed before joining (%s)", client, state.host, reason.value)

    def _roster_seats(self) -> list[Seat]:
        return [member.seat for member in self.members.values()]

    def _roster_frame(self) -> bytes:
        # Not cached: the one-process cache is keyed by the local members, and the roster here
        # changes with every node's joins and leaves.
        return self._encode_roster()

    def _cut(self, client: ClientId, reason: str, actions: list[Action]) -> None:
        """Close ``client`` with ``shutdown{reason}`` (§12's notice, for one connection)."""
        state = self._clients.get(client)
        if state is None:
            return
        actions.append(Send(encode_message(self.codec, Shutdown(reason)), (client,)))
        self._drop(client, LeaveReason.CONNECTION_LOST, actions)
        actions.append(Close(client, flush=True))

    def _release(self, client: ClientId) -> None:
        """Let ``client``'s held input be handled again."""
        state = self._clients.get(client)
        if state is None or not state.held:
            return
        state.held = False
        # Handled by the core's next turn (take_released), within a read budget and §10.1's hold
        # like any input left over: a say pipelined behind a ping is no way around them.
        self._released.append(client)

    def take_released(self) -> list[ClientId]:
        released, self._released = self._released, []
        return released

    @property
    def holding_says(self) -> bool:
        return self._unapplied_total >= self.say_window or bool(self._holders)

    def holding(self, client: ClientId, holds: bool) -> None:
        if client in self.room and not self._stopping:
            self._propose("flow", (client, 1 if holds else 0))

    def _settle_text(self, client: ClientId, octets: int) -> None:
        """``octets`` of ``client``'s proposed text were applied, or will never be."""
        owed = self._unapplied.get(client)
        if owed is not None:
            self._unapplied[client] = owed - octets
            self._unapplied_total -= octets

    # --- proposals ---------------------------------------------------------------------------

    def _propose(self, script: str, args: tuple[bytes | str | int, ...]) -> None:
        self._number += 1
        proposal = _Proposal(self._number, script, args)
        self._proposals.append(proposal)
        if self._ready:
            self._send(proposal)

    def _send(self, proposal: _Proposal) -> None:
        assert self.epoch is not None
        self.commands.command(
            (
                "EVALSHA",
                SCRIPTS[proposal.script].sha,
                len(self._keys),
                *self._keys,
                self.epoch,
                self.node,
                proposal.number,
                CLUSTER_LOG_MAXLEN,
                self.prefix,
                *proposal.args,
            ),
            lambda reply: self._acknowledged(proposal, reply),
        )

    def _acknowledged(self, proposal: _Proposal, reply: Reply) -> None:
        while self._proposals and self._proposals[0].number <= proposal.number:
            self._proposals.popleft()
        if proposal.script == "say" and reply not in (b"ok", b"dup"):
            client = proposal.args[0]
            assert isinstance(client, int)
            self._settle_text(client, _text_octets(proposal))  # no entry of it will be applied
        if reply == b"epoch":
            self._room_lost()
        elif isinstance(reply, hiredis.ReplyError):
            log.error("the room refused a proposal: %s", reply)

    def _flush_says(self) -> None:
        if not self._says:
            return
        says, self._says = self._says, {}
        self._say_octets = 0
        for client, texts in says.items():
            if client in self.room:
                octets = sum(map(len, texts))
                self._unapplied[client] = self._unapplied.get(client, 0) + octets
                self._unapplied_total += octets
                self._propose("say", (client, *texts))

    # --- the log -----------------------------------------------------------------------------

    def _read(self) -> None:
        if self._reading or not self._ready or self.reader.state is not LinkState.UP:
            return
        self._reading = True
        generation = self._generation
        self.reader.command(
            (
                "XREAD",
                "COUNT",
                CLUSTER_READ_COUNT,
                "BLOCK",
                int(CLUSTER_READ_BLOCK * 1000),
                "STREAMS",
                self._keys[2],
                self.last_id,
            ),
            lambda reply: self._entries(generation, reply),
            wait=CLUSTER_READ_BLOCK,
        )

    def _entries(self, generation: int, reply: Reply) -> None:
        if generation != self._generation:
            return  # a read from before a restart: the snapshot replaced what it would apply
        self._reading = False
        if isinstance(reply, hiredis.ReplyError):
            log.error("reading the room's log failed: %s", reply)
            self.reader.drop(self._now, "log read refused")
            return
        if reply:
            for entry_id, fields in reply[0][1]:
                if not self._ready:
                    return
                self._apply(entry_id, dict(zip(fields[::2], fields[1::2], strict=True)))
        self._read()

    def _apply(self, entry_id: bytes, entry: dict[bytes, bytes]) -> None:
        seq = int(entry[b"q"])
        if seq <= self.applied:
            return  # already in the snapshot
        if seq != self.applied + 1:
            log.error("the room's log skips from %d to %d: it was trimmed past this node", self.applied, seq)
            self._restart(CLUSTER_GAP_REASON)
            return
        self.applied = seq
        self.last_id = entry_id
        kind = entry[b"k"]
        member = entry[b"m"]
        if kind == b"s":
            text = entry[b"t"]
            if member.startswith(self._member_prefix):
                self._settle_text(int(member[len(self._member_prefix) :]), len(text))
            self._apply_say(member, _text(text))
        elif kind == b"j":
            self._apply_join(member, _text(entry[b"n"]), _text(entry[b"h"]), int(entry[b"c"]))
        elif kind == b"l":
            self._apply_leave(member, _text(entry[b"r"]), int(entry[b"c"]))
        elif kind == b"x":
            self._apply_refusal(member, entry[b"w"] == b"skeleton")
        elif kind == b"f":
            self._apply_flow(member, entry[b"on"] == b"1")
        self._answer_syncs()

    def _own_client(self, member: bytes) -> ClientId | None:
        node, _, client = member.partition(b":")
        return int(client) if node.decode() == self.node else None

    def _apply_say(self, member: bytes, text: str) -> None:
        sender = self.members.get(member)
        if sender is None:
            log.error("a say from %s, who is not in the room", escape(member.decode(errors="replace")))
            return
        data = sender.relay.frame(text)
        if len(data) - HEADER_SIZE > self.max_frame:
            log.warning("a message from %s does not fit this node's max_frame", escape(sender.seat.identity))
            return
        members = self.room.members
        exclude = sender.client if sender.client is not None else _NOBODY
        last = self._actions[-1] if self._actions else None
        if type(last) is Relay and last.to is members and last.exclude == exclude:
            last.frames.append(data)
        else:
            self._actions.append(Relay([data], members, exclude))

    def _apply_join(self, member: bytes, name: str, host: str, count: int) -> None:
        seat = Seat(name, host)
        client = self._own_client(member)
        self.members[member] = _Member(seat, RelayEncoder(self.codec, name, host), client)
        if count != len(self.members):
            log.error("the room's count %d differs from this node's %d", count, len(self.members))
        state = self._clients.get(client) if client is not None else None
        if client is not None and state is not None and self._joining.pop(client, None) is not None:
            self.room.join(client, name, host)
            state.relay = self.members[member].relay
            welcome = Welcome(
                name=name,
                host=host,
                clients=count,
                max_frame=self.max_frame,
                server=self.server_name,
                codec=self.codec.name.value,
                proto=PROTOCOL_VERSION,
            )
            self._actions.append(Send(state.connection.send(welcome), (client,)))
            self._welcomed.append(client)
            log.info("connection %d joined as %s (%d present)", client, escape(seat.identity), count)
        joined = encode_message(self.codec, Joined(name, host, count))
        self._actions.append(Send(joined, self.room.members, exclude=client))
        if client is not None:
            self._release(client)

    def _apply_refusal(self, member: bytes, looks_alike: bool) -> None:
        client = self._own_client(member)
        if client is None or self._joining.pop(client, None) is None:
            return
        self._local.pop(client, None)
        state = self._clients.get(client)
        if state is None:
            return
        why = "looks like a name in use" if looks_alike else "is in use"
        self._refuse(client, ProtocolError(ErrorCode.NAME_TAKEN, f"the name {why}"), self._actions)
        self._release(client)

    def _apply_flow(self, member: bytes, holds: bool) -> None:
        """A member started holding the room's says on its node, or stopped: says wait on every
        node while one holds, as on one server (§10.1, §18.2); its own node holds them itself."""
        if member.startswith(self._member_prefix) or member not in self.members:
            return
        if holds:
            self._holders.add(member)
        else:
            self._holders.discard(member)

    def _apply_leave(self, member: bytes, reason: str, count: int) -> None:
        self._holders.discard(member)
        gone = self.members.pop(member, None)
        if gone is None:
            return
        client = gone.client
        if client is not None:
            self._local.pop(client, None)
            if client in self.room:
                # Removed by another node (our lease had expired): announced as gone, so closed.
                log.warning("connection %d was removed from the room by another node", client)
                self._cut(client, CLUSTER_DOWN_REASON, self._actions)
                self._proposals = deque(p for p in self._proposals if p.args[:1] != (client,))
        left = encode_message(self.codec, Left(gone.seat.name, gone.seat.host, count, reason))
        self._actions.append(Send(left, self.room.members))
        log.info("%s left: %s (%d present)", escape(gone.seat.identity), reason, count)

    # --- pings and whos: answered at a log position ------------------------------------------

    def _ask_position(self, client: ClientId) -> None:
        if self._ready:
            self.commands.command(("GET", self._keys[1]), lambda reply: self._position(client, reply))

    def _position(self, client: ClientId, reply: Reply) -> None:
        if client in self._syncing:
            self._sync_at[client] = int(reply) if isinstance(reply, bytes) else 0
            self._answer_syncs()

    def _answer_syncs(self) -> None:
        if not self._sync_at:
            return
        due = [client for client, seq in self._sync_at.items() if seq <= self.applied]
        for client in due:
            del self._sync_at[client]
            message = self._syncing.pop(client)
            if isinstance(message, Ping):
                ServerRules._handle(self, client, self._clients[client], message, self._actions)
            else:
                self._actions.append(Send(self._roster_frame(), (client,)))
            self._release(client)

    # --- links, leases, snapshots ------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if not self._started:
            self._started = True
            self._down_since = now  # not in the room yet: the resume bound runs from the start
        self._now = now
        for link in self.links:
            link.tick(now)

    def _link_up(self, now: float) -> None:
        self._tick(now)
        if self.commands.state is not LinkState.UP or self.reader.state is not LinkState.UP:
            return
        for script in SCRIPTS.values():
            self.commands.command(("SCRIPT", "LOAD", script.source), self._script_loaded)
        self._refresh_lease(now)
        if self.epoch is None:
            self._load_snapshot()
        else:
            self.commands.command(("GET", self._keys[0]), self._resumed)

    def _script_loaded(self, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError):
            log.error("Redis refused a script: %s", reply)

    def _link_down(self, now: float) -> None:
        self._tick(now)
        if self._ready:
            log.warning("cluster link lost: holding the room's input for up to %g s", CLUSTER_RESUME_BOUND)
        self._ready = False
        self._reading = False
        self._sync_at.clear()  # the positions asked are asked again on resuming
        if self._down_since is None:
            self._down_since = now
        for link in self.links:
            if link.state is not LinkState.DOWN:
                link.drop(now, "the other link to Redis was lost")
        for client in self._clients:
            state = self._clients[client]
            if client in self.room:
                state.held = True

    def _load_snapshot(self) -> None:
        self.commands.command(
            ("EVALSHA", SCRIPTS["snapshot"].sha, len(self._keys), *self._keys, secrets.token_hex(8)),
            self._snapshot,
        )

    def _snapshot(self, reply: Reply) -> None:
        if isinstance(reply, hiredis.ReplyError) or not isinstance(reply, list):
            log.error("loading the room failed: %s", reply)
            self.commands.drop(self._now, "snapshot refused")
            return
        epoch, seq, last_id, records, holders = reply
        self.epoch = epoch
        self.applied = int(seq)
        self.last_id = last_id
        joined: list[tuple[int, bytes, Seat]] = []
        for member, record in zip(records[::2], records[1::2], strict=True):
            order, name, host, *_ = record.split(b"\0")
            joined.append((int(order), member, Seat(_text(name), _text(host))))
        self.members = {
            member: _Member(seat, RelayEncoder(self.codec, seat.name, seat.host), self._own_client(member))
            for _, member, seat in sorted(joined)
        }
        prefix = self._member_prefix
        self._holders = {m for m in holders if m in self.members and not m.startswith(prefix)}
        log.info(
            "room %s loaded: node %s, %d members, at entry %d",
            escape(self.room_name),
            self.node,
            len(self.members),
            self.applied,
        )
        if self._abandoned:
            abandoned, self._abandoned = self._abandoned, []
            self._reap(abandoned, force=True)
        self._resume()

    def _resumed(self, reply: Reply) -> None:
        if reply != self.epoch:
            self._room_lost()
            return
        log.info("cluster link back: resuming at entry %d", self.applied)
        self._resume()

    def _resume(self) -> None:
        self._ready = True
        self._down_since = None
        self._unavailable = False
        for proposal in self._proposals:
            self._send(proposal)
        for client in self._syncing:
            if client not in self._sync_at:
                self._ask_position(client)
        self._read()
        for client in list(self._clients):
            if client not in self._joining and client not in self._syncing:
                self._release(client)

    def _room_lost(self) -> None:
        if self.epoch is None:
            return
        log.error("the room's log is gone (Redis lost its data): closing the room's connections")
        self._restart(CLUSTER_RESET_REASON)

    def _restart(self, reason: str) -> None:
        """Close every local member and joiner with ``shutdown{reason}``, then start over in the
        room as a new node (its old members are removed from the room if it still exists)."""
        for client in list(self._local):
            self._cut(client, reason, self._actions)
        self._local.clear()
        self._joining.clear()
        self._proposals.clear()
        self._says.clear()
        self._say_octets = 0
        self._unapplied.clear()
        self._unapplied_total = 0
        self._holders.clear()
        self._released.clear()
        if self.epoch is not None:
            self._abandoned.append(self.node)
        self.node = secrets.token_hex(8)
        self._member_prefix = f"{self.node}:".encode()
        self.epoch = None
        self.members = {}
        self.applied = 0
        self.last_id = b"0-0"
        self._ready = False
        self._reading = False
        self._generation += 1
        if self.commands.state is LinkState.UP and self.reader.state is LinkState.UP:
            self._load_snapshot()  # the log reader's pending read finds nothing it applies

    def _refresh_lease(self, now: float) -> None:
        self._lease_due = now + CLUSTER_LEASE_REFRESH
        lease = f"{self.prefix}lease:{self.node}"
        self.commands.command(("SET", lease, "1", "PX", int(CLUSTER_LEASE_TTL * 1000)))
        others = {member.partition(b":")[0].decode() for member in self.members} - {self.node}
        if others and self._ready:
            self._reap(sorted(others), force=False)

    def _reap(self, nodes: Sequence[str], *, force: bool, done: Callback | None = None) -> None:
        """Remove the members of ``nodes`` whose lease has expired (all of them, with ``force``)."""
        assert self.epoch is not None
        self.commands.command(
            (
                "EVALSHA",
                SCRIPTS["reap"].sha,
                len(self._keys),
                *self._keys,
                self.epoch,
                self.node,
                0,
                CLUSTER_LOG_MAXLEN,
                self.prefix,
                LeaveReason.CONNECTION_LOST.value,
                "1" if force else "0",
                *nodes,
            ),
            done or self._reaped,
        )

    def _reaped(self, reply: Reply) -> None:
        if isinstance(reply, int) and reply:
            log.warning("removed %d members of nodes whose lease expired", reply)
        elif isinstance(reply, hiredis.ReplyError):
            log.error("checking the other nodes' leases failed: %s", reply)
