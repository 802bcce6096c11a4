"""Payload codecs (spec/PROTOCOL.md §4): maps of plain values to bytes and back.

A codec only turns bytes into plain Python values; whether those values form a message is
for :mod:`protocol.messages` to say. Every decoding failure leaves as a
:class:`RemoteProtocolError` with code ``bad_payload``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any, ClassVar, Protocol

import msgpack

from .constants import CodecName, ErrorCode
from .errors import LocalProtocolError, RemoteProtocolError


class Codec(Protocol):
    """Turns one payload into one value and back."""

    name: CodecName

    def encode(self, value: dict[str, Any]) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


# A msgpack payload made by a pickle encoder: PROTO opcode 0x80 then protocol 2..5. As msgpack
# that is an empty map followed by extra bytes, so the hint below makes the likely cause plain.
_PICKLE_PREFIXES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

_SCALARS = (str, int, float, bool, type(None), bytes)


def _reject_timestamps(value: Any) -> None:
    # The timestamp extension (type -1) is decoded by msgpack itself and never reaches
    # ext_hook, so it is looked for here. Iterative: nesting may be up to msgpack's own limit.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif not isinstance(item, _SCALARS):
            raise ValueError(f"msgpack extension value {type(item).__name__} is not allowed")


class MsgpackCodec:
    """The default codec (§4.2): strict UTF-8 strings, str/bytes map keys, no extension types."""

    name = CodecName.MSGPACK

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, value: dict[str, Any]) -> bytes:
        try:
            data: bytes = self._packer.pack(value)
        except Exception as exc:
            # A str with lone surrogates (not UTF-8) or an int beyond 64 bits has no msgpack form.
            raise LocalProtocolError(ErrorCode.BAD_PAYLOAD, f"not encodable as msgpack: {exc}") from None
        return data

    def decode(self, payload: bytes) -> Any:
        try:
            # max_*_len default to len(payload), so no length in the payload can over-allocate.
            value = msgpack.unpackb(
                payload, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0, use_list=True
            )
            if not isinstance(value, _SCALARS):
                _reject_timestamps(value)
        except Exception as exc:
            # msgpack raises ValueError subclasses, UnicodeDecodeError, TypeError (unhashable keys), ...
            hint = " (the payload looks like pickle: is the peer using the pickle codec?)"
            if bytes(payload[:2]) not in _PICKLE_PREFIXES:
                hint = ""
            raise RemoteProtocolError(
                ErrorCode.BAD_PAYLOAD, f"not a msgpack value: {str(exc) or type(exc).__name__}{hint}"
            ) from None
        return value


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build plain containers and scalars and nothing else (§4.3).

    Every global lookup is refused, so no callable (``os.system``, ``subprocess.Popen``,
    ``builtins.eval``, ``getattr``) can be reached, whether by GLOBAL, STACK_GLOBAL,
    INST/OBJ/REDUCE or the copyreg extension registry, all of which go through find_class.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Truncated: the names come from the peer and the error quoting them must fit one frame.
        raise pickle.UnpicklingError(f"global {module[:64]}.{name[:64]} is forbidden")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are forbidden")


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _check_memo_indices(payload: bytes) -> None:
    # The C unpickler grows its memo table to twice the largest PUT index it meets and clears
    # every slot, so "N r\xff\xff\xff\x0f" alone would touch gigabytes. A pickle stores fewer
    # objects than it has bytes; pickletools reads the opcodes without building anything.
    for opcode, argument, _ in pickletools.genops(payload):
        if opcode.name in _MEMO_PUTS and isinstance(argument, int) and argument >= len(payload):
            raise pickle.UnpicklingError(f"memo index {argument} is out of range")


class PickleCodec:
    """The opt-in codec (§4.3): pickle protocol 2 out, a restricted unpickler in.

    Only for peers the operator trusts: even without globals, pickle is not a format
    designed to be parsed from strangers.
    """

    name = CodecName.PICKLE
    PROTOCOL: ClassVar[int] = 2

    def encode(self, value: dict[str, Any]) -> bytes:
        return pickle.dumps(value, protocol=self.PROTOCOL)

    def decode(self, payload: bytes) -> Any:
        stream = io.BytesIO(payload)
        try:
            _check_memo_indices(payload)
            value = RestrictedUnpickler(stream).load()
        except Exception as exc:
            # UnpicklingError, EOFError, ValueError, UnicodeDecodeError, MemoryError on absurd
            # LONG4 lengths, ... : every one is the peer's bad payload.
            raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, f"not an acceptable pickle: {exc}") from None
        if stream.tell() != len(payload):
            raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, "bytes after the pickle's STOP opcode")
        return value


def get_codec(name: str) -> Codec:
    """The codec registered under ``name`` (a :class:`CodecName` value)."""
    if name == CodecName.MSGPACK:
        return MsgpackCodec()
    if name == CodecName.PICKLE:
        return PickleCodec()
    raise ValueError(f"unknown codec {name!r}; expected one of {[c.value for c in CodecName]}")
