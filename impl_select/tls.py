"""TLS over memory BIOs, for both servers and the suite's peers (spec/PROTOCOL.md §17):
ciphertext in, plaintext out; no socket here.

A :class:`TlsSession` wraps one connection's :class:`ssl.SSLObject` between two
:class:`ssl.MemoryBIO`: the I/O layer feeds it what the socket read (:meth:`~TlsSession.receive`)
and writes what :meth:`~TlsSession.take_output` gives; :meth:`~TlsSession.encrypt` turns the
core's frames into records. The handshake runs inside :meth:`~TlsSession.receive`, so no
event loop needs to know about ``SSLWantRead``. Both servers and the conformance peers use it
(asyncio's ``ssl=`` transport is not used: it cannot half-close, and see SECURITY.md).

Every failure of the TLS layer (a plaintext client, garbage instead of a ClientHello, a bad
certificate) is raised as :class:`TlsFailure`, with a one-line reason, never as an
:class:`ssl.SSLError` from the ``ssl`` module.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from pathlib import Path

from protocol.options import ServerOptions

#: Plaintext read from the TLS object per call.
_READ_CHUNK = 1 << 16


class TlsFailure(Exception):
    """The TLS layer of a connection failed; ``str()`` is a one-line reason."""


class TlsSession:
    """One connection's TLS state over memory BIOs."""

    __slots__ = ("_incoming", "_outgoing", "_tls", "closed", "handshaken")

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self.handshaken = False
        #: Our close_notify has been written (after :meth:`close`); nothing more is encrypted.
        self.closed = False

    def start(self) -> None:
        """Begin the handshake (a client's ClientHello is then in :meth:`take_output`)."""
        self._handshake()

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        """Feed ciphertext (``b""`` = the socket's end of stream); returns the plaintext it
        completed and whether the peer's stream has ended (close_notify, or TCP EOF).

        Raises :class:`TlsFailure` when the peer did not speak TLS or the handshake failed.
        """
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()
        if not self.handshaken and not self._handshake():
            return b"", not data
        chunks: list[bytes] = []
        ended = False
        while True:
            try:
                chunk = self._tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                ended = True
                break
            except ssl.SSLEOFError:  # TCP EOF without close_notify: a truncated stream
                ended = True
                break
            except ssl.SSLError as exc:
                raise TlsFailure(describe(exc)) from None
            if not chunk:
                ended = True
                break
            chunks.append(chunk)
        return b"".join(chunks), ended

    def _handshake(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            if self._incoming.eof:
                raise TlsFailure("the connection ended during the TLS handshake") from None
            return False
        except ssl.SSLEOFError:
            raise TlsFailure("the connection ended during the TLS handshake") from None
        except ssl.SSLError as exc:
            raise TlsFailure(describe(exc)) from None
        self.handshaken = True
        return True

    def encrypt(self, frames: Iterable[bytes | memoryview]) -> int:
        """Encrypt ``frames`` into :meth:`take_output`; returns the plaintext octets taken.

        Before the handshake is done, or after :meth:`close`, nothing can be sent: the frames
        are dropped (a hello timeout's error cannot reach a peer that never finished it).
        """
        total = 0
        for frame in frames:
            total += len(frame)
            if self.handshaken and not self.closed:
                self._tls.write(frame)
        return total

    def close(self) -> None:
        """Write close_notify (our half of the close, §17.2); reading can go on."""
        if self.closed:
            return
        self.closed = True
        if not self.handshaken:
            return
        # WantRead: the peer's close_notify is yet to come, which the reading side handles.
        with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
            self._tls.unwrap()

    def take_output(self) -> bytes:
        """The ciphertext to write to the socket now (may be ``b""``)."""
        return self._outgoing.read() if self._outgoing.pending else b""

    @property
    def pending_output(self) -> int:
        return self._outgoing.pending

    @property
    def version(self) -> str | None:
        """The negotiated protocol version (``"TLSv1.3"``), once the handshake is done."""
        return self._tls.version()


def describe(exc: ssl.SSLError) -> str:
    """One line for an SSL error: OpenSSL's reason (``WRONG_VERSION_NUMBER``), or its text."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    if reason:
        return f"TLS error: {str(reason).lower().replace('_', ' ')}"
    return f"TLS error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The servers' context: TLS 1.2 or later, the ``ssl`` module's secure defaults, and client
    certificates required when ``client_ca`` is given. Raises :class:`TlsFailure` on a missing
    or unreadable certificate, key or CA file, or a key that does not match the certificate."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None:
            _readable(flag, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsFailure(f"--tls-cert {cert} with --tls-key {key}: {_load_problem(exc)}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsFailure(f"--tls-client-ca {client_ca}: {_load_problem(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _readable(flag: str, path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise TlsFailure(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise TlsFailure(f"{flag} {path}: {exc.strerror or exc}") from None


def _load_problem(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and "PEM lib" in str(exc):
        return "not a PEM certificate chain and its private key"
    if isinstance(exc, ssl.SSLError):
        return describe(exc).removeprefix("TLS error: ")
    return str(exc)


def load_server_context(options: ServerOptions) -> ssl.SSLContext | None:
    """The TLS context ``options`` ask for (``--tls-cert``...), or ``None`` for plain TCP;
    raises :class:`TlsFailure` naming the flag and the file that cannot be used."""
    if options.tls_cert is None or options.tls_key is None:
        return None
    return server_context(options.tls_cert, options.tls_key, options.tls_client_ca)


def client_context(ca: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client's context: the system's trust store, or ``ca``; hostnames checked.

    ``verify=False`` turns verification off (the conformance runner's ``--tls-insecure``, for a
    server under test with a self-signed certificate); the bundled client never does.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _readable("--tls-ca", ca)
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsFailure(f"--tls-ca {ca}: {_load_problem(exc)}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
