"""A load generator for the drills, run in a process of its own so that it does not share an interpreter
(and its lock) with the client whose latency a drill measures:

    python -m tests.drills.flood http://127.0.0.1:PORT CLIENTS SECONDS REQUEST-TARGET [HEADER: VALUE ...]

CLIENTS keep-alive connections send the same GET over and over for SECONDS (then stop by themselves) and
read each answer whole; the last line on stdout is JSON: {"requests": N, "statuses": {"200": N, ...},
"errors": N}. A plain HTTP/1.1 client on asyncio streams: sending costs next to nothing, so the load is the
server's to carry. Loopback addresses only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Reads one response whole; (status, whether the server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "connection" and value.strip().lower() == "close":
            close = True
    await reader.readexactly(length)
    return status, close


async def _client(host: str, port: int, request: bytes, deadline: float, statuses: Counter[int]) -> int:
    errors = 0
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors += 1
            await asyncio.sleep(0.05)  # the server is not accepting: back off a little, not spin
            continue
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                status, close = await _answer(reader)
                statuses[status] += 1
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        finally:
            writer.close()
    return errors


async def flood(url: str, clients: int, seconds: float, target: str, headers: list[str]) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in LOOPBACK:
        raise SystemExit(f"flood sends to loopback addresses only, not {host!r}")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode("latin-1")
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    errors = await asyncio.gather(*(_client(host, port, request, deadline, statuses) for _ in range(clients)))
    return {
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(errors),
    }


def main(argv: list[str]) -> None:
    url, clients, seconds, target, *headers = argv
    result = asyncio.run(flood(url, int(clients), float(seconds), target, headers))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
