"""The package's one exception tree (spec/PROTOCOL.md §9).

Every error carries the spec's error code, so a server can turn any failure into the
error message it owes the peer. No other exception type leaves the package: third-party
errors (construct, struct, msgpack, pickle, UnicodeDecodeError, ...) are wrapped where
they can occur.
"""

from __future__ import annotations

from .constants import FATAL, ErrorCode

#: The longest message an error keeps, in code points. Messages can quote the peer's input (a
#: decoder's complaint about a 1 MiB string), yet the error frame carrying one must fit the
#: smallest max_frame (§3.2): 200 code points are 800 octets of UTF-8 at most.
MAX_MESSAGE_LENGTH = 200


class ProtocolError(Exception):
    """A violation of the protocol, with the spec's code and whether it ends the connection."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def fatal(self) -> bool:
        return FATAL[self.code]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""


class LocalProtocolError(ProtocolError):
    """This side tried to do something the protocol forbids (a bug in the caller)."""
