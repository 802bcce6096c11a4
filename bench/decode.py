"""What a server pays to decode, or refuse, one client payload (spec §4.2 rule 9, §4.3 rule 8).

    python -m bench.decode [--repeats N]

For each 1 MiB amplification frame (one-octet values that would each build an object), the
time a server's codec (``max_objects=MAX_PAYLOAD_OBJECTS``) takes to refuse it, next to the
time a codec without the limit (a client's) takes to decode it whole; then the cost of the
limit on ordinary messages, with and without it. Best of ``repeats`` runs, in ms or µs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from protocol import Hello, Say, encode_message, get_codec
from protocol.constants import MAX_PAYLOAD_OBJECTS
from protocol.errors import RemoteProtocolError

MIB = 1 << 20

#: (codec, shape) -> a payload of at most 1 MiB.
AMPLIFIERS: dict[tuple[str, str], bytes] = {
    ("msgpack", "array 32 of empty arrays"): b"\xdd" + (MIB - 5).to_bytes(4, "big") + b"\x90" * (MIB - 5),
    ("msgpack", "16 arrays 16 of empty arrays"): b"\xdc\x00\x10" + (b"\xdc\xff\xfa" + b"\x90" * 0xFFFA) * 16,
    ("msgpack", "map 32 of empty maps"): b"\xdf"
    + (MIB // 2 - 3).to_bytes(4, "big")
    + b"\xa0\x80" * (MIB // 2 - 3),
    ("pickle", "EMPTY_SET then APPENDS"): b"\x80\x04](" + b"\x8f" * (MIB - 6) + b"e.",
    ("pickle", "EMPTY_LIST then APPENDS"): b"\x80\x02](" + b"]" * (MIB - 6) + b"e.",
    ("pickle", "BINGET of one list"): b"\x80\x02](]q\x00" + b"h\x00" * (MIB // 2 - 6) + b"e.",
}


def _best(work: Callable[[], Any], repeats: int) -> float:
    """The shortest of ``repeats`` runs of ``work``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _attempt(decode: Callable[[bytes], Any], payload: bytes) -> Callable[[], str]:
    def work() -> str:
        try:
            decode(payload)
        except RemoteProtocolError as exc:
            return exc.code.value
        return "decoded"

    return work


def run(repeats: int = 5) -> list[dict[str, Any]]:
    """One row per amplifier and per ordinary message."""
    rows: list[dict[str, Any]] = []
    for (name, shape), payload in AMPLIFIERS.items():
        server = get_codec(name, max_objects=MAX_PAYLOAD_OBJECTS)
        client = get_codec(name)
        refuse = _attempt(server.decode, payload)
        rows.append(
            {
                "codec": name,
                "payload": f"{shape}, {len(payload)} octets",
                "server": refuse(),
                "server_ms": _best(refuse, repeats) * 1000,
                "unbounded_ms": _best(_attempt(client.decode, payload), max(1, repeats // 3)) * 1000,
            }
        )
    batch = 2000
    for name in ("msgpack", "pickle"):
        server = get_codec(name, max_objects=MAX_PAYLOAD_OBJECTS)
        client = get_codec(name)
        for label, message in (("hello", Hello("alice")), ("say of 16 KiB", Say("x" * (16 << 10)))):
            payload = encode_message(client, message)[4:]

            def many(decode: Callable[[bytes], Any], payload: bytes = payload) -> Callable[[], None]:
                def work() -> None:
                    for _ in range(batch):
                        decode(payload)

                return work

            rows.append(
                {
                    "codec": name,
                    "payload": label,
                    "server": "decoded",
                    "server_us": _best(many(server.decode), repeats) / batch * 1e6,
                    "unbounded_us": _best(many(client.decode), repeats) / batch * 1e6,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows = run(args.repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if "server_ms" in row:
            print(
                f"{row['codec']:8} {row['payload']:45} {row['server']:12} "
                f"{row['server_ms']:8.2f} ms   unbounded {row['unbounded_ms']:8.1f} ms"
            )
        else:
            print(
                f"{row['codec']:8} {row['payload']:45} {row['server']:12} "
                f"{row['server_us']:8.2f} us   unbounded {row['unbounded_us']:8.2f} us"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
