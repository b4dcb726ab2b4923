"""`make bench`: the gateway and the database against their own limits, in the same run.

    python -m bench [--only gateway,hot_sku,scale,profile] [--seconds 10] [--rounds 3] [--connections 16]
                    [--products 10000] [--workers 2] [--pool 4] [--hot-clients 8,32,64]
                    [--sizes 10000,100000,1000000] [--scale-connections 8] [--profile-orders 400]

Each benchmark starts its own PostgreSQL under bench/.work and writes bench/results/<name>.json (the machine,
the versions, the exact command and the numbers); bench/results/README.md gets one table per benchmark from
the latest JSON files, and the "Benchmarks" section of the project README the same tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench import harness, hot_sku, pairs, profile, scale

BENCHMARKS: dict[str, ModuleType] = {"gateway": pairs, "hot_sku": hot_sku, "scale": scale, "profile": profile}
TITLES = {
    "gateway": "gateway vs pgbench: catalog reads and order creation",
    "hot_sku": "hot SKU: concurrent buyers of one product",
    "scale": "scale: filtered keyset pages at growing catalog sizes",
    "profile": "profile: the statements of one order (pg_stat_statements, track = all)",
}
README_START = "<!-- bench:start (written by `make bench`) -->"
README_END = "<!-- bench:end -->"


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated, of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--seconds", type=int, default=10, help="duration of each run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating rounds per side (gateway), keyset rounds per size (scale)",
    )
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients (gateway bench)")
    parser.add_argument("--products", type=int, default=10_000, help="generated catalog size (gateway bench)")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    parser.add_argument("--pool", type=int, default=4, help="database connections per gateway worker")
    parser.add_argument("--hot-clients", type=_ints, default=[8, 32, 64], help="buyers of the hot product")
    parser.add_argument("--sizes", type=_ints, default=[10_000, 100_000, 1_000_000], help="catalog sizes")
    parser.add_argument("--scale-connections", type=int, default=8, help="concurrent clients (scale bench)")
    parser.add_argument("--profile-orders", type=int, default=400, help="orders of the profile (one client)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return args


def run_one(name: str, args: argparse.Namespace, command: str) -> dict[str, Any]:
    module = BENCHMARKS[name]
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    body: dict[str, Any] = module.run(args)
    result = {
        "name": name,
        "command": command,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - clock, 1),
        "machine": harness.machine(),
        "server_settings": harness.server_settings(),
        **body,
    }
    path = harness.write_result(name, result)
    print(f"results: {path}", file=sys.stderr)
    return result


def tables() -> str:
    """The latest result of every benchmark, as markdown (one section each)."""
    sections: list[str] = []
    for name, module in BENCHMARKS.items():
        path = harness.RESULTS / f"{name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        render: Callable[[dict[str, Any]], str] = module.markdown
        try:
            table = render(result)
        except (KeyError, TypeError):  # a result written by an older version of the benchmark
            continue
        m = result["machine"]
        sections.append(
            f"### {TITLES[name]}\n\n"
            f"Measured {result['finished_at']} on {m['cores']} cores, {m['memory_gib']} GiB ({m['cpu']}), "
            f"PostgreSQL {result['versions']['postgresql']}"
            + "".join(f" ({k} = {v})" for k, v in result["server_settings"].items())
            + f", Python {m['python']}: `{result['command']}`\n\n"
            + table
        )
    return "\n".join(sections)


def write_readmes() -> None:
    text = tables()
    (harness.RESULTS / "README.md").write_text(
        "# Latest benchmark results\n\nWritten by `make bench` (`python -m bench`) from the JSON files "
        "beside this one.\n\n" + text
    )
    readme = harness.ROOT / "README.md"
    current = readme.read_text()
    block = f"{README_START}\n{text}{README_END}"
    if README_START in current and README_END in current:
        head, _, rest = current.partition(README_START)
        _, _, tail = rest.partition(README_END)
        updated = head + block + tail
    else:
        updated = current.rstrip("\n") + "\n\n## Benchmarks\n\n" + _README_INTRO + "\n\n" + block + "\n"
    if updated != current:
        readme.write_text(updated)


_README_INTRO = """\
`make bench` (`python -m bench`, or `--only gateway|hot_sku|scale`) measures the gateway against the
database's own limit on the same machine, in the same run: pgbench running the gateway's SQL as the same
roles beside wrk through HTTP. Each benchmark starts its own PostgreSQL under `bench/.work`, writes
`bench/results/<name>.json` (machine, versions, exact commands, numbers) and refreshes the tables below and
`bench/results/README.md`. The whole run takes about 8 minutes on 2 cores; wrk, pgbench, PostgreSQL and the
gateway share the CPUs, as they would on a small single-host deployment."""


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        harness.ensure_wrk()
        for name in args.only:
            print(f"== {name}", file=sys.stderr, flush=True)
            run_one(name, args, command.rstrip())
    except harness.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        write_readmes()
    print(tables())
    return 0


if __name__ == "__main__":
    sys.exit(main())
