"""Payload codecs (spec/PROTOCOL.md §4): maps of plain values to bytes and back.

A codec only turns bytes into plain Python values; whether those values form a message is
for :mod:`protocol.messages` to say. Every decoding failure leaves as a
:class:`RemoteProtocolError` with code ``bad_payload``.

A codec made with ``max_objects`` (a server's, for client payloads: ``MAX_PAYLOAD_OBJECTS``)
refuses a payload holding more values than that before it builds any of them, so a frame
costs its decoder at most that many objects however small each one is.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import msgpack

from .constants import CodecName, ErrorCode
from .errors import LocalProtocolError, RemoteProtocolError
from .logtext import escape


class Codec(Protocol):
    """Turns one payload into one value and back."""

    name: CodecName
    #: Payloads holding more values are refused unbuilt; ``None``: only the length bounds them.
    max_objects: int | None

    def encode(self, value: dict[str, Any]) -> bytes: ...

    def decode(self, payload: bytes) -> Any: ...


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed")


# A payload made by the other codec (§4.1): each decoder names the likely cause when it fails.
# A pickle of protocol 2..5 starts with the PROTO opcode 80 and its protocol; as msgpack that
# is an empty map followed by extra bytes.
_PICKLE_PREFIXES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
# A msgpack message is a non-empty map: fixmap 81..8f, map 16 (de) or map 32 (df). To pickle,
# 81..8f are protocol 2 opcodes that no pickle of a map starts with, de and df no opcodes.
_MSGPACK_MAP_STARTS = frozenset(range(0x81, 0x90)) | {0xDE, 0xDF}


def looks_like_pickle(payload: bytes) -> bool:
    """Whether ``payload`` starts as a pickle of protocol 2 to 5 does (§4.1)."""
    return bytes(payload[:2]) in _PICKLE_PREFIXES


def looks_like_msgpack(payload: bytes) -> bool:
    """Whether ``payload`` starts as a msgpack message (a non-empty map) does (§4.1)."""
    return len(payload) > 0 and payload[0] in _MSGPACK_MAP_STARTS


_SCALARS = (str, int, float, bool, type(None), bytes)
#: The octet ff as an int: ``int in bytes`` is a plain memchr.
_EXT_TYPE_MINUS_ONE = 0xFF


def _msgpack_sizes() -> list[tuple[int, int]]:
    """Per first octet: the octets of the value's head, and how many of them that follow the
    first octet give the length of a body after the head (0: none). A container's head is
    its first octet and count; its items follow as values of their own."""
    sizes = [(1, 0)] * 256  # fixints, nil, booleans and c1 (which unpackb then refuses)
    for octet in range(0x80, 0xA0):
        sizes[octet] = (1, 0)  # fixmap, fixarray
    for octet in range(0xA0, 0xC0):
        sizes[octet] = (1 + (octet & 0x1F), 0)  # fixstr
    for octet, head, length in (
        (0xC4, 2, 1), (0xC5, 3, 2), (0xC6, 5, 4),  # bin 8/16/32
        (0xC7, 3, 1), (0xC8, 4, 2), (0xC9, 6, 4),  # ext 8/16/32: length, then the type octet
        (0xCA, 5, 0), (0xCB, 9, 0),  # float 32/64
        (0xCC, 2, 0), (0xCD, 3, 0), (0xCE, 5, 0), (0xCF, 9, 0),  # uint 8..64
        (0xD0, 2, 0), (0xD1, 3, 0), (0xD2, 5, 0), (0xD3, 9, 0),  # int 8..64
        (0xD4, 3, 0), (0xD5, 4, 0), (0xD6, 6, 0), (0xD7, 10, 0), (0xD8, 18, 0),  # fixext
        (0xD9, 2, 1), (0xDA, 3, 2), (0xDB, 5, 4),  # str 8/16/32
        (0xDC, 3, 0), (0xDD, 5, 0), (0xDE, 3, 0), (0xDF, 5, 0),  # array 16/32, map 16/32
    ):  # fmt: skip
        sizes[octet] = (head, length)
    return sizes


_MSGPACK_SIZES = _msgpack_sizes()


def msgpack_objects_over(payload: bytes, limit: int) -> bool:
    """Whether ``payload`` holds more than ``limit`` msgpack values, counted without building any.

    Every value, map keys and containers included, starts with one head; a walk from head to
    head, skipping string and binary bodies, counts them and stops at ``limit + 1``. Each value
    takes at least one octet, so a payload of at most ``limit`` octets needs no walk. What the
    walk does not understand (a length past the end, c1) is left to the decoder to refuse.
    """
    end = len(payload)
    if end <= limit:
        return False
    sizes = _MSGPACK_SIZES
    position = 0
    count = 0
    while position < end:
        count += 1
        if count > limit:
            return True
        head, length = sizes[payload[position]]
        if length:
            position += head + int.from_bytes(payload[position + 1 : position + 1 + length], "big")
        else:
            position += head
    return False


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

    def __init__(self, max_objects: int | None = None) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)
        self.max_objects = max_objects

    def encode(self, value: dict[str, Any]) -> bytes:
        try:
            data: bytes = self._packer.pack(value)
        except Exception as exc:
            # A str with lone surrogates (not UTF-8) or an int beyond 64 bits has no msgpack form.
            raise LocalProtocolError(ErrorCode.BAD_PAYLOAD, f"not encodable as msgpack: {exc}") from None
        return data

    def encode_str(self, text: str) -> bytes:
        """``text`` as msgpack: its bytes inside any map or array that holds it."""
        try:
            data: bytes = self._packer.pack(text)
        except Exception as exc:
            raise LocalProtocolError(ErrorCode.BAD_PAYLOAD, f"not encodable as msgpack: {exc}") from None
        return data

    def decode(self, payload: bytes) -> Any:
        limit = self.max_objects
        if limit is not None and msgpack_objects_over(payload, limit):
            raise RemoteProtocolError(
                ErrorCode.BAD_PAYLOAD, f"the payload holds more than {limit} msgpack values"
            )
        try:
            # max_*_len default to len(payload), so no length in the payload can over-allocate.
            value = msgpack.unpackb(
                payload, raw=False, strict_map_key=True, ext_hook=_refuse_ext, timestamp=0, use_list=True
            )
            # A timestamp is ext type -1, whose type octet is ff; UTF-8 text never contains ff,
            # so a payload without that octet (nearly every message) cannot hold one.
            if _EXT_TYPE_MINUS_ONE in payload and not isinstance(value, _SCALARS):
                _reject_timestamps(value)
        except Exception as exc:
            # msgpack raises ValueError subclasses, UnicodeDecodeError, TypeError (unhashable keys), ...
            hint = " (the payload looks like pickle: is the peer using the pickle codec?)"
            if not looks_like_pickle(payload):
                hint = ""
            # A decoder's complaint can quote the input; it is logged, so it is escaped (§14.3).
            complaint = escape(str(exc) or type(exc).__name__)
            raise RemoteProtocolError(
                ErrorCode.BAD_PAYLOAD, f"not a msgpack value: {complaint}{hint}"
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
        # PickleCodec.decode escapes the message, as every complaint quoting the input (§14.3).
        raise pickle.UnpicklingError(f"global {module[:64]}.{name[:64]} is forbidden")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are forbidden")


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
#: The opcodes that read the object on top of the stack without popping it.
_READ_TOP = _MEMO_PUTS | {"MEMOIZE", "DUP"}
#: The opcodes that push a str or bytes: the only values a restricted pickle may hash.
_STRINGS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
    }
)
# What the scan knows of a stack item.
_OTHER, _STRING, _MARK = 0, 1, 2
# What an opcode hashes: nothing, every other item above the mark (dict keys), or all of them.
_HASHES_NONE, _HASHES_PAIRS, _HASHES_ALL = 0, 1, 2
_HASHES = {
    "SETITEMS": _HASHES_PAIRS,
    "DICT": _HASHES_PAIRS,
    "ADDITEMS": _HASHES_ALL,
    "FROZENSET": _HASHES_ALL,
}


def _effect(opcode: pickletools.OpcodeInfo) -> tuple[bool, int, tuple[int, ...], int]:
    """From pickletools' table: whether the opcode takes the items above the topmost mark,
    how many objects it pops below them, the kinds it pushes, and what it hashes."""
    before = opcode.stack_before
    marked = pickletools.markobject in before
    below = before.index(pickletools.markobject) if marked else len(before)
    kind = _STRING if opcode.name in _STRINGS else _OTHER
    pushes = tuple(_MARK if item is pickletools.markobject else kind for item in opcode.stack_after)
    return marked, below, pushes, _HASHES.get(opcode.name, _HASHES_NONE)


_EFFECTS = {opcode.name: _effect(opcode) for opcode in pickletools.opcodes}


def _underflow() -> pickle.UnpicklingError:
    return pickle.UnpicklingError("stack underflow")


def _opcodes(payload: bytes, limit: int | None) -> Iterator[tuple[pickletools.OpcodeInfo, Any]]:
    """The opcodes of ``payload`` with their arguments, read one at a time; raises on reading
    opcode ``limit + 1``, so a long pickle is refused after ``limit`` opcodes, not read whole."""
    # Every opcode takes at least one octet: a payload of at most ``limit`` octets is within it.
    if limit is None or len(payload) <= limit:
        for opcode, argument, _ in pickletools.genops(payload):
            yield opcode, argument
        return
    for count, (opcode, argument, _) in enumerate(pickletools.genops(payload), 1):
        if count > limit:
            raise pickle.UnpicklingError(f"the pickle has more than {limit} opcodes")
        yield opcode, argument


def _scan(payload: bytes, max_opcodes: int | None = None) -> None:
    """Refuse, before anything is built, the pickles that would cost far more than their size.

    - More than ``max_opcodes`` opcodes: each builds at most one object, so a pickle of a few
      values has few opcodes, while 1 MiB of ``EMPTY_SET`` builds a million sets. The scan
      stops reading at the first opcode over the limit.
    - A memo index at or beyond the payload length: the C unpickler grows its memo table to
      twice the largest PUT index and clears every slot, so ``4e 72 ff ff ff 0f`` alone
      would touch gigabytes. A pickle stores fewer objects than it has bytes.
    - A dict key or set element that is not a str or bytes (§14.1): a tuple hashes all its
      items without caching, so DUP TUPLE2 repeated n times (2n bytes) makes a key whose hash
      takes 2**n steps; ints and floats hash predictably, so keys with one hash make
      inserting quadratic. str and bytes hashes are salted per process.

    pickletools reads the opcodes without building anything; only the kind of each stack item
    (mark, str or bytes, other) is followed, through the memo too, with the unpickler's rules
    for marks: an opcode never pops an object from below the topmost mark.
    """
    stack: list[int] = []
    marks: list[int] = []  # where the marks are in ``stack``
    memo: dict[Any, int] = {}
    for opcode, argument in _opcodes(payload, max_opcodes):
        name = opcode.name
        fence = marks[-1] + 1 if marks else 0  # objects below it are out of reach
        if name in _READ_TOP:
            if len(stack) <= fence:
                raise _underflow()
            if name == "DUP":
                stack.append(stack[-1])
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif isinstance(argument, int) and argument >= len(payload):
                raise pickle.UnpicklingError(f"memo index {argument} is out of range")
            else:
                memo[argument] = stack[-1]
        elif name in _MEMO_GETS:
            stack.append(memo.get(argument, _OTHER))
        elif name == "POP":
            # An object, or the topmost mark when nothing is above it, as the unpickler does.
            if not stack:
                raise _underflow()
            if marks and marks[-1] == len(stack) - 1:
                marks.pop()
            stack.pop()
        elif name == "MARK":
            marks.append(len(stack))
            stack.append(_MARK)
        else:
            marked, below, pushes, hashes = _EFFECTS[name]
            hashed: list[int] = []
            if marked:
                if not marks:
                    raise pickle.UnpicklingError("no mark on the stack")
                at = marks.pop()
                if hashes == _HASHES_PAIRS:
                    hashed = stack[at + 1 :: 2]
                elif hashes == _HASHES_ALL:
                    hashed = stack[at + 1 :]
                del stack[at:]
                fence = marks[-1] + 1 if marks else 0
            if below:
                if len(stack) - below < fence:
                    raise _underflow()
                if name == "SETITEM":
                    hashed = stack[-2:-1]  # dict, key, value
                del stack[-below:]
            if _OTHER in hashed:
                raise pickle.UnpicklingError(f"{name}: a dict key or set element must be a str or bytes")
            stack.extend(pushes)


class PickleCodec:
    """The opt-in codec (§4.3): pickle protocol 2 out, a restricted unpickler in.

    Only for peers the operator trusts: even without globals, pickle is not a format
    designed to be parsed from strangers.
    """

    name = CodecName.PICKLE
    PROTOCOL: ClassVar[int] = 2

    def __init__(self, max_objects: int | None = None) -> None:
        #: For pickle, the limit counts opcodes: each builds at most one object (§4.3 rule 8).
        self.max_objects = max_objects

    def encode(self, value: dict[str, Any]) -> bytes:
        return pickle.dumps(value, protocol=self.PROTOCOL)

    def decode(self, payload: bytes) -> Any:
        stream = io.BytesIO(payload)
        try:
            _scan(payload, self.max_objects)
            value = RestrictedUnpickler(stream).load()
        except Exception as exc:
            # UnpicklingError, EOFError, ValueError, UnicodeDecodeError, MemoryError on absurd
            # LONG4 lengths, ... : every one is the peer's bad payload.
            hint = " (the payload looks like msgpack: is the peer using the msgpack codec?)"
            if not looks_like_msgpack(payload):
                hint = ""
            # Messages like "invalid load key, '\x1b'" quote the input raw: escaped (§14.3).
            complaint = escape(str(exc) or type(exc).__name__)
            message = f"not an acceptable pickle: {complaint}{hint}"
            raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, message) from None
        if stream.tell() != len(payload):
            raise RemoteProtocolError(ErrorCode.BAD_PAYLOAD, "bytes after the pickle's STOP opcode")
        return value


def get_codec(name: str, *, max_objects: int | None = None) -> Codec:
    """The codec registered under ``name`` (a :class:`CodecName` value).

    A server decodes client payloads with ``max_objects=MAX_PAYLOAD_OBJECTS`` (§4.2 rule 9,
    §4.3 rule 8); a client leaves it ``None``, since a roster holds several values per member.
    """
    if name == CodecName.MSGPACK:
        return MsgpackCodec(max_objects)
    if name == CodecName.PICKLE:
        return PickleCodec(max_objects)
    raise ValueError(f"unknown codec {name!r}; expected one of {[c.value for c in CodecName]}")
