"""The one table of wire constants, limits, defaults and codes (spec/PROTOCOL.md §13).

Both servers, the client and the conformance suite import their numbers from here, so a
changed default changes everywhere at once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

PROTOCOL_VERSION: Final = 1

#: Frame header: a uint32 in network byte order counting the payload bytes (§3.1).
HEADER_SIZE: Final = 4
#: The largest length the header can express; no receiver accepts it by default.
MAX_WIRE_LENGTH: Final = 0xFFFF_FFFF

#: Default largest frame payload, both directions (§3.2). NATS' max_payload default is 1 MB.
DEFAULT_MAX_FRAME: Final = 1 << 20
#: A server must be able to send its own welcome and errors, so it refuses smaller limits.
MIN_MAX_FRAME: Final = 1024

#: Values a server decodes from one client payload at most (§4.2 rule 9, §4.3 rule 8): every
#: client message is a handful (hello is 5), yet a 1 MiB frame of one-octet empty arrays would
#: build a million. Redis likewise refuses a command of more than 10 arguments from a client
#: that has not authenticated ("unauthenticated multibulk length").
MAX_PAYLOAD_OBJECTS: Final = 4096

#: Seconds from accept until a hello must have been accepted (§7.2).
DEFAULT_HELLO_TIMEOUT: Final = 10.0
#: Bytes queued for one client before it is cut off as a slow consumer (§10).
#: Redis' pubsub client-output-buffer-limit soft limit is 8 MB.
DEFAULT_MAX_OUTPUT_BUFFER: Final = 8 << 20
#: Buffered octets (§10) over which a connection is congested, until it drains below half of
#: them (§10.1). Redis' pubsub client-output-buffer-limit soft limit is 8 MB over 60 s; this
#: one only throttles, so it is set where a reader that keeps up never reaches it: 256 KiB
#: is what a socket send buffer commonly holds (Linux's tcp_wmem maximum is 4 MiB).
DEFAULT_OUTPUT_SOFT_LIMIT: Final = 256 << 10
#: Buffered octets (§10) over which a member holds the room's says, until it drains to half of
#: them (§10.1 rule 2); the lower of this and the soft limit applies. A pong waits behind at
#: most this much of the server's output, a few milliseconds of a reader that keeps up. HTTP/2's
#: initial flow-control window is the same 64 KiB (65,535 octets, RFC 9113 §6.9.2): what a
#: sender may have outstanding before its peer's reading lets it go on.
DEFAULT_HOLD_MARK: Final = 64 << 10
#: Seconds a member that holds the room's says (§10.1) may drain nothing before it no longer
#: holds them (§10.2): its buffer then grows to the cap or the slow-consumer timeout. Like
#: TCP's minimum retransmission timeout (1 s, RFC 6298 rule 2.4) it tells a peer that stopped
#: from one that is slow; a fifth of the slow-consumer timeout.
DEFAULT_HOLD_PATIENCE: Final = 2.0
#: Seconds a connection may stay congested before it is cut off as a slow consumer (§10.2).
#: Redis' soft limit allows 60 s; a congested reader here holds up every sender (§10.1),
#: so the bound is shorter.
DEFAULT_SLOW_CONSUMER_TIMEOUT: Final = 10.0
#: Seconds a member has to complete a frame it has begun (§7.5). nginx's
#: client_body_timeout (between two reads) is 60 s; this bound is on the whole frame, which at
#: the default max_frame takes a 35 KB/s link 30 s.
DEFAULT_FRAME_TIMEOUT: Final = 30.0
#: Seconds a member may go without completing any frame (§7.5). IRC servers send PING after
#: about 2 minutes of silence and close after as long again without an answer; NATS closes
#: after 2 unanswered pings 2 minutes apart.
DEFAULT_IDLE_TIMEOUT: Final = 300.0
#: Seconds of silence after which the bundled client sends a ping, well inside the idle
#: timeout (the NATS client's ping interval is 2 minutes).
CLIENT_KEEPALIVE: Final = 60.0
#: Octets of input one connection may have handled per loop turn (§14.2); a frame counts at
#: least READ_BUDGET_MIN_COST, and a who by the size of its answer. 64 KiB is one read.
DEFAULT_READ_BUDGET: Final = 64 << 10
#: What a frame costs the read budget at the least: a tiny frame is not free to handle.
READ_BUDGET_MIN_COST: Final = 64
#: Octets of queued output the whole server may hold (§14.2): 32 connections at their cap.
#: Redis' maxmemory has no default; this bounds what hostile readers can make a server hold,
#: and leaves room for a join storm of a thousand clients that read late (about 60 MB).
DEFAULT_MAX_TOTAL_OUTPUT: Final = 256 << 20
#: Octets of unfinished input the whole server may hold (§14.2): 64 maximum-size frames.
DEFAULT_MAX_TOTAL_INPUT: Final = 64 << 20
#: Seconds a closing side keeps reading and discarding after its half-close (§9.2).
CLOSE_LINGER: Final = 2.0
#: Seconds a stopping server spends flushing shutdown notices (§12).
SHUTDOWN_FLUSH_TIMEOUT: Final = 2.0

#: The largest TCP port number; command lines refuse larger ones rather than wrap them.
MAX_PORT: Final = 65535
#: The longest timeout any command line accepts, in seconds (a day). Event loops wait in
#: milliseconds held in a C int, about 24.8 days at most; longer waits overflow.
MAX_TIMEOUT: Final = 86_400.0

#: Seconds the bundled client waits to connect and for each answer it needs (welcome, the
#: pong that ends pipe mode), unless its --timeout says otherwise.
DEFAULT_CLIENT_TIMEOUT: Final = 10.0

#: Name length bounds in code points (§6).
NAME_MIN_LENGTH: Final = 1
NAME_MAX_LENGTH: Final = 32


class CodecName(StrEnum):
    """Payload codecs (§4)."""

    MSGPACK = "msgpack"
    PICKLE = "pickle"


DEFAULT_CODEC: Final = CodecName.MSGPACK
#: Every server implements these codecs; the others are optional (§4.1).
REQUIRED_CODECS: Final = frozenset({CodecName.MSGPACK})


class ErrorCode(StrEnum):
    """Codes carried by error messages (§9.1)."""

    FRAME_TOO_LARGE = "frame_too_large"
    BAD_PAYLOAD = "bad_payload"
    BAD_MESSAGE = "bad_message"
    HELLO_REQUIRED = "hello_required"
    NAME_INVALID = "name_invalid"
    NAME_TAKEN = "name_taken"
    ALREADY_JOINED = "already_joined"
    UNKNOWN_TYPE = "unknown_type"
    TEXT_TOO_LONG = "text_too_long"
    HELLO_TIMEOUT = "hello_timeout"
    SLOW_CONSUMER = "slow_consumer"
    FRAME_TIMEOUT = "frame_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    SERVER_BUSY = "server_busy"
    INTERNAL_ERROR = "internal_error"
    AUTH_FAILED = "auth_failed"


#: Whether the sender of each error closes the connection after it (§9.1).
FATAL: Final[dict[ErrorCode, bool]] = {
    ErrorCode.FRAME_TOO_LARGE: True,
    ErrorCode.BAD_PAYLOAD: True,
    ErrorCode.BAD_MESSAGE: False,
    ErrorCode.HELLO_REQUIRED: True,
    ErrorCode.NAME_INVALID: False,
    ErrorCode.NAME_TAKEN: False,
    ErrorCode.ALREADY_JOINED: False,
    ErrorCode.UNKNOWN_TYPE: False,
    ErrorCode.TEXT_TOO_LONG: False,
    ErrorCode.HELLO_TIMEOUT: True,
    ErrorCode.SLOW_CONSUMER: True,
    ErrorCode.FRAME_TIMEOUT: True,
    ErrorCode.IDLE_TIMEOUT: True,
    ErrorCode.SERVER_BUSY: True,
    ErrorCode.INTERNAL_ERROR: True,
    ErrorCode.AUTH_FAILED: True,
}


class LeaveReason(StrEnum):
    """Why a member left, as carried by left.reason (§8.4)."""

    QUIT = "quit"
    CONNECTION_LOST = "connection_lost"
    SLOW_CONSUMER = "slow_consumer"
    ERROR = "error"


SHUTDOWN_REASON: Final = "server shutting down"

# --- access control (§17.3, §17.4) --------------------------------------------------------------

#: Failed hellos one source may make at once before it is limited (§17.4). fail2ban's default
#: maxretry is 5.
AUTH_BURST: Final = 5
#: Seconds that give a limited source one more attempt: 5 per minute once the burst is spent,
#: as fail2ban's defaults (5 failures per 10 minutes) allow, but without locking out for long.
AUTH_REFILL_SECONDS: Final = 12.0
#: Sources of failed attempts remembered at most; the least recently failed is forgotten first.
#: 65,536 entries of about 200 octets: some 13 MB at worst, whatever the number of attackers.
AUTH_MAX_SOURCES: Final = 65_536
#: Bounds on a token's length in an auth file, in characters: 16 is a 96-bit random token in
#: base64, 256 what NATS accepts as an auth token comfortably (its docs suggest 32+).
AUTH_TOKEN_MIN_LENGTH: Final = 16
AUTH_TOKEN_MAX_LENGTH: Final = 256


# --- the reference servers' own tuning (not part of the wire protocol) -------------------------

#: Octets queued for one connection that make a server write before its loop iteration ends:
#: each ready socket gives up to a read's worth per iteration, and with many senders the output
#: for one recipient would otherwise grow with their number.
FLUSH_EARLY: Final = 256 * 1024
#: Connections accepted per readiness event, so an accept storm cannot starve the others.
ACCEPT_BATCH: Final = 256
#: Seconds accepting pauses after an accept error such as EMFILE: the listener stays
#: readable, and retrying at once would spin.
ACCEPT_BACKOFF: Final = 0.1
#: Listen backlog; the kernel silently caps it (``net.core.somaxconn`` on Linux).
LISTEN_BACKLOG: Final = 4096
#: The fraction of a total bound (§14.2) above which new connections are refused with
#: server_busy: the room left is kept for the connections there are.
BUSY_MARK: Final = 0.75
#: Unsent octets an accepted socket's kernel buffer takes beyond those in flight
#: (TCP_NOTSENT_LOWAT): half the hold mark of §10.1, so a backlog shows in the server's own
#: buffer and what a pong waits behind stays small. Apple's and Cloudflare's guidance for
#: HTTP/2 servers uses 16-128 KiB.
NOT_SENT_LOW_WATER: Final = 32 << 10


# --- clustered servers (§18): one room across nodes, through Redis ----------------------------

#: Seconds a node's lease lives without a refresh; once it has expired, the other nodes remove
#: that node's members (§18.5). A Kubernetes node lease lasts 40 s against a 10 s heartbeat; a
#: chat room wants to hear of a dead node in seconds, and a refresh is one Redis SET.
CLUSTER_LEASE_TTL: Final = 3.0
#: Seconds between lease refreshes, and between checks of the other nodes' leases: a third of
#: the TTL, as etcd's clients renew their leases, so two refreshes can be lost before it expires.
CLUSTER_LEASE_REFRESH: Final = 1.0
#: Seconds a node keeps its members while it cannot reach Redis; then it tells them (shutdown)
#: and closes them (§18.6). Equal to the lease TTL: by then the others may have removed them.
CLUSTER_RESUME_BOUND: Final = 3.0
#: Entries a room's log keeps at least (XADD MAXLEN ~): a node that falls further behind sees a
#: gap and shuts its members down (§18.7). Ten times the default maxLen of Socket.IO's Redis
#: streams adapter (10,000).
CLUSTER_LOG_MAXLEN: Final = 100_000
#: Octets of input a connection may have held while its hello is decided or Redis is away
#: (§18.4); over it the connection is closed with shutdown. Half the default output cap.
CLUSTER_HELD_INPUT: Final = 4 << 20
#: Reconnect backoff, doubling from the first to the second: redis-py's default backoff caps
#: at 0.512 s.
CLUSTER_BACKOFF_MIN: Final = 0.05
CLUSTER_BACKOFF_MAX: Final = 0.5
#: Seconds a reply may be late (beyond a blocking read's own wait) before the link is dropped.
CLUSTER_REPLY_TIMEOUT: Final = 2.0
#: A blocking log read's wait (XREAD BLOCK), seconds, and the entries one read returns at most.
CLUSTER_READ_BLOCK: Final = 1.0
CLUSTER_READ_COUNT: Final = 1000
#: The room a node serves without --room.
DEFAULT_ROOM: Final = "main"

#: Seconds within which, after a node dies without a word (kill -9), every other node has sent
#: `left` for each of its members (§18.5): its lease expires, and the next reap of every other
#: node, a refresh later at most, removes them. Socket.IO's Redis adapter states no bound.
CLUSTER_DEPARTURE_BOUND: Final = CLUSTER_LEASE_TTL + 2 * CLUSTER_LEASE_REFRESH
#: Seconds within which, after Redis restarts empty, every member has been told (shutdown) or
#: its node serves the room again (§18.6): the resume bound, and as long again for reconnecting.
CLUSTER_RECOVERY_BOUND: Final = 2 * CLUSTER_RESUME_BOUND + CLUSTER_REPLY_TIMEOUT

#: Shutdown reasons of a clustered node (§18.6, §18.7): the members' room is no longer served.
CLUSTER_LOST_REASON: Final = "room unavailable: the server lost its cluster link"
CLUSTER_RESET_REASON: Final = "room reset: the cluster lost the room's log"
CLUSTER_GAP_REASON: Final = "room unavailable: this server fell behind the room's log"
CLUSTER_DOWN_REASON: Final = "room unavailable: this server was declared down"
CLUSTER_HELD_REASON: Final = "room unavailable: too much input held while the cluster decides"
