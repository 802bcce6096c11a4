"""The baseline: the chat server an asyncio tutorial would write (streams, one write per recipient)."""

import asyncio
import struct
import sys

import msgpack

HEADER = struct.Struct(">I")
members: dict[asyncio.StreamWriter, str] = {}


def frame(message: dict[str, object]) -> bytes:
    payload: bytes = msgpack.packb(message)
    return HEADER.pack(len(payload)) + payload


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    host = writer.get_extra_info("peername")[0]
    try:
        while True:
            (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
            message = msgpack.unpackb(await reader.readexactly(length))
            if message["type"] == "hello":
                name = members[writer] = message["name"]
                welcome = {"type": "welcome", "name": name, "host": host, "clients": len(members)}
                limits = {"max_frame": 1 << 20, "server": "baseline", "proto": 1, "codec": "msgpack"}
                writer.write(frame(welcome | limits))
            elif message["type"] == "say" and writer in members:
                text = message["text"]
                relayed = frame({"type": "message", "name": members[writer], "host": host, "text": text})
                for other in members:
                    if other is not writer:
                        other.write(relayed)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        members.pop(writer, None)
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
