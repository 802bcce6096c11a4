"""Access control (spec/PROTOCOL.md §17.3, §17.4): tokens, reserved names, and the rate limit
on failed attempts. No I/O, no clock: the time is passed in.

The auth file has one entry a line; blank lines and lines starting with ``#`` are ignored:

- ``TOKEN``: whoever presents it joins under any name not reserved to another token;
- ``NAME TOKEN``: the same, and ``NAME`` (as compared by §6.2) is reserved to that token.

Only SHA-256 digests of the tokens are kept, and a presented token is compared with each of
them by :func:`hmac.compare_digest`. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..constants import (
    AUTH_BURST,
    AUTH_MAX_SOURCES,
    AUTH_REFILL_SECONDS,
    AUTH_TOKEN_MAX_LENGTH,
    AUTH_TOKEN_MIN_LENGTH,
    ErrorCode,
)
from ..errors import RemoteProtocolError
from ..names import name_key, name_problem, name_skeleton


class AuthFileError(ValueError):
    """The auth file cannot be used; ``str()`` says where and why (never quoting a token)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Reservation:
    name: str
    digest: bytes


class Tokens:
    """The tokens of an auth file, as digests, and the names reserved to some of them."""

    def __init__(self, tokens: list[str], reserved: dict[str, str] | None = None) -> None:
        """``tokens`` admit any free name; ``reserved`` maps a name to the one token it is
        reserved to (that token admits its holder too)."""
        reserved = reserved or {}
        self._digests = tuple(dict.fromkeys(_digest(t) for t in [*tokens, *reserved.values()]))
        self._by_key: dict[str, _Reservation] = {}
        self._by_skeleton: dict[str, _Reservation] = {}
        for name, token in reserved.items():
            problem = name_problem(name)
            if problem is not None:
                raise AuthFileError(f"reserved name {name!r}: {problem}")
            reservation = _Reservation(name, _digest(token))
            for table, key in ((self._by_key, name_key(name)), (self._by_skeleton, name_skeleton(name))):
                other = table.get(key)
                if other is not None and other.digest != reservation.digest:
                    raise AuthFileError(f"the names {other.name!r} and {name!r} collide (§6.2)")
                table[key] = reservation

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read an auth file; raises :class:`AuthFileError` (missing, unreadable, malformed)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise AuthFileError(f"{path}: no such file") from None
        except UnicodeDecodeError:
            raise AuthFileError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise AuthFileError(f"{path}: {exc.strerror or exc}") from None
        tokens: list[str] = []
        reserved: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) > 2:
                raise AuthFileError(
                    f"{path}:{number}: expected TOKEN or NAME TOKEN, found {len(fields)} fields"
                )
            token = fields[-1]
            if not AUTH_TOKEN_MIN_LENGTH <= len(token) <= AUTH_TOKEN_MAX_LENGTH:
                raise AuthFileError(
                    f"{path}:{number}: a token has {AUTH_TOKEN_MIN_LENGTH} to {AUTH_TOKEN_MAX_LENGTH}"
                    f" characters, this one {len(token)}"
                )
            if len(fields) == 1:
                tokens.append(token)
            elif fields[0] in reserved:
                raise AuthFileError(f"{path}:{number}: the name {fields[0]!r} is reserved twice")
            else:
                reserved[fields[0]] = token
        if not tokens and not reserved:
            raise AuthFileError(f"{path}: no token (every hello would be refused)")
        try:
            return cls(tokens, reserved)
        except AuthFileError as exc:
            raise AuthFileError(f"{path}: {exc}") from None

    def admits(self, token: str | None) -> bytes | None:
        """The digest of ``token`` when it is one of ours, else ``None``; every digest is
        compared, so the time taken does not tell which one matched."""
        if token is None:
            return None
        presented = _digest(token)
        found: bytes | None = None
        for digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = digest
        return found

    def reserved_to_other(self, name: str, digest: bytes) -> str | None:
        """The reserved name ``name`` collides with, when it is reserved to another token."""
        for reservation in (self._by_key.get(name_key(name)), self._by_skeleton.get(name_skeleton(name))):
            if reservation is not None and not hmac.compare_digest(reservation.digest, digest):
                return reservation.name
        return None


def source_key(host: str) -> str:
    """What failed attempts are counted by: the IPv4 address, or the IPv6 /64 (one host's
    share of a typical allocation: a host can pick any address within its /64)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureLimiter:
    """A token bucket per source of failed attempts: ``burst`` failures, then one per
    ``refill`` seconds; at most ``max_sources`` sources, the least recently failed forgotten."""

    def __init__(
        self,
        burst: int = AUTH_BURST,
        refill: float = AUTH_REFILL_SECONDS,
        max_sources: int = AUTH_MAX_SOURCES,
    ) -> None:
        self.burst = burst
        self.refill = refill
        self.max_sources = max_sources
        #: source -> (allowance left, when it was last updated), least recently failed first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _allowance(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return float(self.burst)
        left, since = entry
        return min(float(self.burst), left + max(0.0, now - since) / self.refill)

    def limited(self, source: str, now: float) -> bool:
        """Whether ``source`` has no attempt left at ``now``."""
        return self._allowance(source, now) < 1.0

    def failed(self, source: str, now: float) -> None:
        """Count a failed attempt from ``source`` at ``now``."""
        left = self._allowance(source, now) - 1.0
        self._buckets[source] = (max(left, 0.0), now)
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)


class Access:
    """A server's access control: the tokens and the limiter, deciding each hello (§17.3)."""

    def __init__(self, tokens: Tokens, limiter: FailureLimiter | None = None) -> None:
        self.tokens = tokens
        self.limiter = limiter if limiter is not None else FailureLimiter()

    def check(self, host: str, name: str, token: str | None, now: float) -> None:
        """Admit a hello of ``name`` with ``token`` from ``host``, or raise: ``auth_failed``
        (fatal) while the source is limited, without looking at the token, or for a missing or
        wrong token (counted); ``name_taken`` for a name reserved to another token (§17.3)."""
        source = source_key(host)
        if self.limiter.limited(source, now):
            raise RemoteProtocolError(ErrorCode.AUTH_FAILED, "too many failed attempts; try again later")
        digest = self.tokens.admits(token)
        if digest is None:
            self.limiter.failed(source, now)
            missing = "no token" if token is None else "wrong token"
            raise RemoteProtocolError(ErrorCode.AUTH_FAILED, f"access denied ({missing})")
        holder = self.tokens.reserved_to_other(name, digest)
        if holder is not None:
            raise RemoteProtocolError(ErrorCode.NAME_TAKEN, "the name is reserved")
