"""The server framework, sans I/O: what both reference servers run on (spec/PROTOCOL.md §7-§12).

:class:`ServerCore` owns every connection's whole life (protocol state, outboxes and the
output cap, the hello timer, the closing procedure, shutdown); a server accepts, reads,
writes what the core's outboxes hold, carries out its directives and wakes it on time.
:class:`ServerRules` is the protocol's part of it: events in, actions out.
"""

from .core import Directive, Disposal, Outbox, ServerCore
from .room import Room, Seat
from .rules import Action, ClientId, Close, Relay, Send, ServerRules
from .timers import Deadlines

__all__ = [
    "Action",
    "ClientId",
    "Close",
    "Deadlines",
    "Directive",
    "Disposal",
    "Outbox",
    "Relay",
    "Room",
    "Seat",
    "Send",
    "ServerCore",
    "ServerRules",
]
