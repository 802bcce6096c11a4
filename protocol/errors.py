"""The package's one exception tree (spec/PROTOCOL.md §9).

Every error carries the spec's error code, so a server can turn any failure into the
error message it owes the peer. No other exception type leaves the package: third-party
errors (construct, struct, msgpack, pickle, UnicodeDecodeError, ...) are wrapped where
they can occur.
"""

from __future__ import annotations

from .constants import FATAL, ErrorCode


class ProtocolError(Exception):
    """A violation of the protocol, with the spec's code and whether it ends the connection."""

    def __init__(self, code: ErrorCode, message: str) -> None:
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
