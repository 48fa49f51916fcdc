"""Profile one server under the throughput load with py-spy (``make bench`` installs it).

``python -m tests.benchmarks.profile [--server ours] [--seconds 10]`` prints the functions
with the most samples (own time and total time) and keeps py-spy's collapsed stacks under
``tests/benchmarks/results/`` (load them into speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import time
from pathlib import Path

from tests.benchmarks.loadgen import closed_loop
from tests.benchmarks.run import RESULTS, TOKEN_SIZE, Bench, raise_fd_limit


def summarize(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "own %   function"]
    lines += [f"{n / samples * 100:5.1f}   {f}" for f, n in own.most_common(top)]
    lines += ["", "total % function"]
    lines += [f"{n / samples * 100:5.1f}   {f}" for f, n in total.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="ours")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--idle", action="store_true", help="sample waiting threads too")
    args = parser.parse_args()
    args.servers = [args.server.replace("before", "ours")]
    args.loop = args.http = "auto"
    args.quick = True
    raise_fd_limit()
    bench = Bench(args)
    bench.start()
    try:
        server = bench.servers[args.server]
        bench.configure(tokens=args.tokens, delay=0)
        asyncio.run(closed_loop(server.target, clients=5, seconds=1, token_size=TOKEN_SIZE))
        out = RESULTS / f"profile-{args.server}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [
                str(Path(os.sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(args.seconds)),
                "--format",
                "raw",
                "--rate",
                "250",
                "--output",
                str(out),
                "--nonblocking",
                *(["--idle"] if args.idle else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        asyncio.run(
            closed_loop(
                server.target,
                clients=args.clients,
                seconds=args.seconds + 1,
                token_size=TOKEN_SIZE,
            )
        )
        spy.wait(30)
        print(summarize(out, args.top))
        print(f"\ncollapsed stacks: {out}")
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
