"""Run the benchmarks: ``make bench`` (full, ~10 min) or ``make bench BENCH_ARGS=--quick``.

What runs (all on 127.0.0.1, every scenario bounded in time and requests):

- the fake OpenAI upstream (:mod:`tests.benchmarks.fake_upstream`) pinned to core 1;
- the servers under test, each one uvicorn process with one worker pinned to core 0:
  ``starlette`` (FastAPI + sse-starlette, bare), ``django`` (plain Django async view with
  ``StreamingHttpResponse``, bare), ``ours`` (django-llmstream's demo site, ``POST stream/``,
  persisting everything to SQLite) and ``ours_pg`` (the same on PostgreSQL, when
  ``DATABASE_URL`` names a PostgreSQL database);
- this process, the load generator (:mod:`tests.benchmarks.loadgen`), also on core 1; its
  CPU share and the upstream's are reported so that neither is mistaken for the bottleneck.

Scenarios, each measured for every server in the same run and in alternating order:
``latency``, ``memory``, ``throughput``, ``capacity``, ``database``; see docs/performance.rst.
The figures are printed as a table with ratios (ours / baseline) and written as JSON under
``tests/benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.loadgen import StreamResult, Target, closed_loop, open_streams, percentile

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
PYTHON = sys.executable
SERVER_CORE = 0
CLIENT_CORE = 1
TOKEN_SIZE = 4
BASELINES = ("starlette", "django")


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def taskset(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    target: Target

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server on port {port} exited; see {log}:\n{log.read_text()[-2000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start within {timeout} s; see {log}")


def uvicorn(
    app: str, port: int, env: dict[str, str], cwd: Path, log: Path, args: argparse.Namespace
) -> subprocess.Popen[bytes]:
    command = [
        *taskset(SERVER_CORE),
        PYTHON,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--loop",
        args.loop,
        "--http",
        args.http,
        "--backlog",
        "4096",
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


#: The settings ``ours``, ``ours_pg`` and ``before`` run with (see the module's docstring).
SITE_SETTINGS = Path(__file__).resolve().parent / "site"


def our_env(
    base: dict[str, str],
    upstream_port: int,
    database_url: str,
    tree: Path = ROOT,
    settings: str = "llmstream_bench_settings",
) -> dict[str, str]:
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": settings,
        "DJANGO_DEBUG": "off",
        "DATABASE_URL": database_url,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_MODEL": "bench",
        "LLMSTREAM_LIMITS": "off",
        "LLMSTREAM_DEFAULT_PROVIDER": "openai",
        "PYTHONPATH": os.pathsep.join(map(str, (tree, tree / "testproject", SITE_SETTINGS, ROOT))),
    }


def migrate(env: dict[str, str], tree: Path = ROOT) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=tree / "testproject",
        env=env,
        check=True,
    )


def our_session(port: int) -> dict[str, str]:
    """Headers of a visitor with a session and a CSRF token (one session for every stream:
    quotas are off, and a session is created once, not per stream)."""
    token = "b" * 32
    headers = {"Cookie": f"csrftoken={token}", "X-CSRFToken": token}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/llmstream/stream/",
        data=b'{"prompt": "warm up"}',
        headers={**headers, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
        response.read()
    session = next((c.split(";", 1)[0] for c in cookies if c.startswith("sessionid=")), None)
    if session is None:
        raise RuntimeError("the demo site set no session cookie")
    return {"Cookie": f"csrftoken={token}; {session}", "X-CSRFToken": token}


def configure_upstream(port: int, tokens: int, delay: float) -> None:
    url = f"http://127.0.0.1:{port}/_config?tokens={tokens}&delay={delay}&size={TOKEN_SIZE}"
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).read()


@dataclass
class Bench:
    args: argparse.Namespace
    upstream_port: int = 0
    upstream: subprocess.Popen[bytes] | None = None
    servers: dict[str, Server] = field(default_factory=dict)
    direct: Target | None = None
    pg_url: str | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmstream-bench-")))

    def start(self) -> None:
        self.upstream_port = free_port()
        log = self.workdir / "upstream.log"
        with open(log, "wb") as out:
            self.upstream = subprocess.Popen(
                [
                    *taskset(CLIENT_CORE),
                    PYTHON,
                    "-m",
                    "tests.benchmarks.fake_upstream",
                    "--port",
                    str(self.upstream_port),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_listening(self.upstream_port, self.upstream, log, 20)
        self.direct = Target(
            "direct",
            self.upstream_port,
            "/v1/chat/completions",
            json.dumps(
                {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
            ).encode(),
            direct=True,
            pid=self.upstream.pid,
        )
        base = {**os.environ, "PYTHONPATH": str(ROOT)}
        base.pop("DATABASE_URL", None)
        base.pop("REDIS_URL", None)  # only ours_redis uses it
        relay_env = {**base, "BENCH_UPSTREAM": f"http://127.0.0.1:{self.upstream_port}/v1"}
        body = b'{"prompt": "Tell me something."}'
        wanted = set(self.args.servers)
        plans: list[tuple[str, str, dict[str, str], Path]] = []
        if "starlette" in wanted:
            plans.append(
                ("starlette", "tests.benchmarks.relays.starlette_app:app", relay_env, ROOT)
            )
        if "django" in wanted:
            plans.append(("django", "tests.benchmarks.relays.django_app:app", relay_env, ROOT))
        if "ours" in wanted:
            env = our_env(base, self.upstream_port, f"sqlite:///{self.workdir / 'bench.sqlite3'}")
            migrate(env)
            plans.append(("ours", "testproject.asgi:application", env, ROOT / "testproject"))
        redis_url = os.environ.get("REDIS_URL", "")
        if "ours_redis" in wanted and redis_url:
            # The Redis broker (and cache) instead of the in-process broker.
            sqlite = f"sqlite:///{self.workdir / 'redis.sqlite3'}"
            env = {**our_env(base, self.upstream_port, sqlite), "REDIS_URL": redis_url}
            migrate(env)
            plans.append(("ours_redis", "testproject.asgi:application", env, ROOT / "testproject"))
        if "ours_demo" in wanted:
            # The demo's own settings: its whole middleware stack and INFO log.
            sqlite = f"sqlite:///{self.workdir / 'demo.sqlite3'}"
            env = our_env(base, self.upstream_port, sqlite, settings="testproject.settings")
            migrate(env)
            plans.append(("ours_demo", "testproject.asgi:application", env, ROOT / "testproject"))
        database_url = os.environ.get("DATABASE_URL", "")
        postgres = database_url.startswith(("postgres", "postgresql"))
        if "ours_pg" in wanted and postgres:
            self.pg_url = database_url
            env = our_env(base, self.upstream_port, database_url)
            migrate(env)
            plans.append(("ours_pg", "testproject.asgi:application", env, ROOT / "testproject"))
        before: Path | None = self.args.before
        if before is not None:
            # Another copy of the project (e.g. before a change), measured in the same run.
            sqlite = f"sqlite:///{self.workdir / 'before.sqlite3'}"
            env = our_env(base, self.upstream_port, sqlite, before)
            migrate(env, before)
            plans.append(("before", "testproject.asgi:application", env, before / "testproject"))
            if postgres and "ours_pg" in wanted:
                env = our_env(base, self.upstream_port, database_url, before)
                plans.append(
                    ("before_pg", "testproject.asgi:application", env, before / "testproject")
                )
        for name, app, env, cwd in plans:
            port = free_port()
            log = self.workdir / f"{name}.log"
            process = uvicorn(app, port, env, cwd, log, self.args)
            path = "/stream" if name in BASELINES else "/llmstream/stream/"
            self.servers[name] = Server(name, port, process, log, Target(name, port, path, body))
        for server in self.servers.values():
            wait_listening(server.port, server.process, server.log, 60)
            server.target.pid = server.pid
            if server.name not in BASELINES:
                server.target.headers = our_session(server.port)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self.upstream is not None and self.upstream.poll() is None:
            self.upstream.terminate()
            self.upstream.wait(10)

    def configure(self, tokens: int, delay: float) -> None:
        configure_upstream(self.upstream_port, tokens, delay)

    def order(self, round_: int) -> list[Server]:
        """The servers in alternating order: rotated by one each round."""
        servers = list(self.servers.values())
        shift = round_ % len(servers) if servers else 0
        return servers[shift:] + servers[:shift]


# -- scenarios ---------------------------------------------------------------------------------


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def scenario_latency(bench: Bench, quick: bool) -> dict[str, Any]:
    """One client, one stream at a time: time to the first token, relay vs direct."""
    bench.configure(tokens=20, delay=0)
    rounds, per_round = (2, 30) if quick else (4, 60)
    cap = 20 if quick else 60
    samples: dict[str, list[float]] = {"direct": []}
    samples.update({name: [] for name in bench.servers})
    errors: dict[str, int] = {}
    started = time.monotonic()
    assert bench.direct is not None
    for round_ in range(rounds):
        targets = [bench.direct] + [s.target for s in bench.order(round_)]
        # Interleave one request per target, so a burst of noise hits all of them alike.
        for _ in range(per_round):
            for target in targets:
                result = await _one(target)
                if result.ttft is not None and result.done:
                    samples[target.name].append(result.ttft)
                else:
                    errors[target.name] = errors.get(target.name, 0) + 1
            if time.monotonic() - started > cap:
                break
        if time.monotonic() - started > cap:
            break
    direct50 = percentile(samples["direct"], 50) or 0.0
    direct99 = percentile(samples["direct"], 99) or 0.0
    out: dict[str, Any] = {"direct": _dist(samples["direct"])}
    for name in bench.servers:
        values = samples[name]
        out[name] = {
            **_dist(values),
            "added_p50_ms": _ms((percentile(values, 50) or 0.0) - direct50),
            "added_p99_ms": _ms((percentile(values, 99) or 0.0) - direct99),
            "errors": errors.get(name, 0),
        }
    return out


async def _one(target: Target) -> StreamResult:
    from tests.benchmarks.loadgen import one_stream

    return await one_stream(target, token_size=TOKEN_SIZE, deadline=time.perf_counter() + 10)


def _dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": _ms(percentile(values, 50)),
        "p99_ms": _ms(percentile(values, 99)),
    }


async def scenario_throughput(bench: Bench, quick: bool) -> dict[str, Any]:
    """50 clients, upstream as fast as it can: CPU per relayed token, tokens/s per core."""
    tokens_per_stream = 200
    bench.configure(tokens=tokens_per_stream, delay=0)
    rounds, seconds = (2, 4.0) if quick else (3, 8.0)
    clients = bench.args.clients
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in bench.servers}
    for round_ in range(rounds):
        for server in bench.order(round_):
            await asyncio.sleep(0.5)  # let the previous server's connections close
            runs[server.name].append(
                await _throughput_once(bench, server, clients, seconds, tokens_per_stream)
            )
    out: dict[str, Any] = {}
    for name, values in runs.items():
        best = min(values, key=lambda r: r["us_per_event"])
        out[name] = {
            **best,
            "us_per_event_runs": [round(r["us_per_event"], 2) for r in values],
            "spread_pct": _spread([r["us_per_event"] for r in values]),
        }
    return out


async def _throughput_once(
    bench: Bench, server: Server, clients: int, seconds: float, tokens_per_stream: int
) -> dict[str, float]:
    assert bench.upstream is not None
    cpu0, up0, me0 = cpu_seconds(server.pid), cpu_seconds(bench.upstream.pid), time.process_time()
    wall0 = time.perf_counter()
    tokens, results, window = await closed_loop(
        server.target, clients=clients, seconds=seconds, token_size=TOKEN_SIZE
    )
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(server.pid) - cpu0
    upstream_cpu = cpu_seconds(bench.upstream.pid) - up0
    me = time.process_time() - me0
    complete = [r for r in results if r.done]
    gaps = [g for r in results for g in r.gaps]
    return {
        "tokens": tokens,
        "streams_completed": len(complete),
        "stream_errors": sum(1 for r in results if r.error and r.error != "cut at the deadline"),
        "us_per_event": cpu / tokens * 1e6 if tokens else float("inf"),
        "events_per_core_s": tokens / cpu if cpu else 0.0,
        "events_per_s": tokens / window,
        "server_cpu_share": cpu / wall,
        "loadgen_cpu_share": me / wall,
        "upstream_cpu_share": upstream_cpu / wall,
        "p99_gap_ms": _ms(percentile(gaps, 99)) or 0.0,
        "tokens_per_stream": tokens_per_stream,
    }


async def scenario_costs(bench: Bench, quick: bool) -> dict[str, Any]:
    """CPU per stream and per token, apart: the throughput load with short (10-token) and
    long (400-token) answers, ``cpu = a * streams + b * tokens`` solved for ``a`` and ``b``
    (best of the rounds for each length). What a request costs before its first token and
    what each token costs afterwards explain the other scenarios' figures."""
    rounds, seconds = (1, 3.0) if quick else (2, 4.0)
    runs: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for round_ in range(rounds):
        for tokens in (10, 400):
            bench.configure(tokens=tokens, delay=0)
            for server in bench.order(round_):
                await asyncio.sleep(0.3)
                cpu0 = cpu_seconds(server.pid)
                received, results, _ = await closed_loop(
                    server.target,
                    clients=bench.args.clients,
                    seconds=seconds,
                    token_size=TOKEN_SIZE,
                )
                cpu = cpu_seconds(server.pid) - cpu0
                # A stream cut at the deadline counts as half of one.
                streams = sum(1.0 if r.done else 0.5 for r in results)
                runs.setdefault((server.name, tokens), []).append((cpu, streams, received))
    out: dict[str, Any] = {}
    for name in bench.servers:
        short = min(runs[(name, 10)], key=lambda r: r[0] / max(r[2], 1))
        long = min(runs[(name, 400)], key=lambda r: r[0] / max(r[2], 1))
        (c1, s1, t1), (c2, s2, t2) = short, long
        det = s1 * t2 - s2 * t1
        if not det or not t1 or not t2:
            out[name] = {"us_per_stream": None, "us_per_token": None}
            continue
        out[name] = {
            "us_per_stream": round((c1 * t2 - c2 * t1) / det * 1e6, 1),
            "us_per_token": round((s1 * c2 - s2 * c1) / det * 1e6, 2),
            "us_per_token_10": round(c1 / t1 * 1e6, 1),
            "us_per_token_400": round(c2 / t2 * 1e6, 1),
        }
    return out


def _spread(values: list[float]) -> float:
    finite = [v for v in values if v != float("inf")]
    if len(finite) < 2:
        return 0.0
    return round((max(finite) - min(finite)) / min(finite) * 100, 1)


async def _probe(
    bench: Bench, server: Server, streams: int, tokens: int, quick: bool
) -> dict[str, Any]:
    """``streams`` streams at 20 tokens/s, started over one stream's length."""
    duration = tokens / 20
    ramp = duration
    cap = ramp + duration * 3 + 5
    cpu0, wall0 = cpu_seconds(server.pid), time.perf_counter()
    results = await open_streams(
        server.target, streams=streams, ramp=ramp, cap=cap, token_size=TOKEN_SIZE
    )
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(server.pid) - cpu0
    ttfts = [r.ttft if r.ttft is not None else cap for r in results]
    gaps = [g for r in results for g in r.gaps]
    received = sum(r.tokens for r in results)
    failed = sum(1 for r in results if not r.done)
    p99_ttft = percentile(ttfts, 99) or cap
    p99_gap = percentile(gaps, 99) or 0.0
    ok = failed == 0 and p99_ttft <= 1.0 and p99_gap <= 0.25
    return {
        "streams": streams,
        "ok": ok,
        "p99_ttft_ms": _ms(p99_ttft),
        "p99_gap_ms": _ms(p99_gap),
        "failed": failed,
        "events_per_s": round(received / wall, 1),
        "server_cpu_share": round(cpu / wall, 3),
    }


async def scenario_capacity(bench: Bench, quick: bool) -> dict[str, Any]:
    """The most concurrent streams at 20 tokens/s one worker holds (p99 TTFT <= 1 s, p99 gap
    <= 250 ms, no failed stream): a bounded search (doubling, then bisection), every server
    probed once per round, in alternating order."""
    tokens = 40 if quick else 60
    bench.configure(tokens=tokens, delay=0.05)
    steps = 5 if quick else 7
    start, ceiling = 100, bench.args.max_streams
    state = {name: {"lo": 0, "hi": None, "next": start, "probes": []} for name in bench.servers}
    for round_ in range(steps):
        for server in bench.order(round_):
            s: dict[str, Any] = state[server.name]
            n = s["next"]
            if n is None:
                continue
            await asyncio.sleep(1.0)
            probe = await _probe(bench, server, n, tokens, quick)
            s["probes"].append(probe)
            if probe["ok"]:
                s["lo"] = n
            else:
                s["hi"] = n
            if s["hi"] is None:
                s["next"] = min(n * 2, ceiling) if n < ceiling else None
            else:
                nxt = (s["lo"] + s["hi"]) // 2
                # Stop when the bracket is within 10 % (or 25 streams).
                close = s["hi"] - s["lo"] <= max(25, s["lo"] // 10)
                s["next"] = None if close else nxt
    out: dict[str, Any] = {}
    for name, s in state.items():
        best = max((p for p in s["probes"] if p["ok"]), key=lambda p: p["streams"], default=None)
        out[name] = {
            "max_streams": s["lo"],
            "bracket": [s["lo"], s["hi"]],
            "events_per_s_at_max": best["events_per_s"] if best else 0.0,
            "probes": s["probes"],
        }
    return out


async def scenario_memory(bench: Bench, quick: bool) -> dict[str, Any]:
    """RSS per open stream: N streams held open (1 token/s), RSS before and while open."""
    streams = 300 if quick else 1000
    tokens = 12
    bench.configure(tokens=tokens, delay=1.0)
    out: dict[str, Any] = {}
    for server in bench.order(0):
        await asyncio.sleep(1.0)
        before = rss_kb(server.pid)
        task = asyncio.ensure_future(
            open_streams(
                server.target, streams=streams, ramp=2.0, cap=tokens + 6, token_size=TOKEN_SIZE
            )
        )
        # Streams are all open after the ramp plus a few tokens.
        peak = before
        for _ in range(int(tokens * 0.6 / 0.25)):
            await asyncio.sleep(0.25)
            peak = max(peak, rss_kb(server.pid))
        results = await task
        out[server.name] = {
            "streams": streams,
            "rss_before_kb": before,
            "rss_open_kb": peak,
            "kb_per_stream": round((peak - before) / streams, 1),
            "failed": sum(1 for r in results if not r.done),
        }
    return out


async def scenario_database(bench: Bench, quick: bool) -> dict[str, Any]:
    """PostgreSQL under many streams at 20 tokens/s: commits and rows written per second, and
    the most connections the worker held (``pg_stat_activity``)."""
    servers = [s for s in bench.servers.values() if s.name.endswith("_pg")]
    if not servers or bench.pg_url is None:
        return {"skipped": "set DATABASE_URL to a PostgreSQL database to run it"}
    streams = bench.args.db_streams or (300 if quick else 1000)
    tokens = 40 if quick else 60
    bench.configure(tokens=tokens, delay=0.05)
    out: dict[str, Any] = {}
    for server in servers:
        await asyncio.sleep(1.0)
        out[server.name] = await _database_once(bench, server, streams, tokens)
    return out


async def _database_once(bench: Bench, server: Server, streams: int, tokens: int) -> dict[str, Any]:
    import psycopg

    assert bench.pg_url is not None
    with psycopg.connect(bench.pg_url, autocommit=True) as conn:
        dbname = conn.info.dbname

        def stats() -> tuple[int, int, int]:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
            ).fetchone()
            tup = conn.execute(
                "SELECT coalesce(sum(n_tup_upd + n_tup_ins), 0) FROM pg_stat_user_tables"
            ).fetchone()
            conns = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (dbname,),
            ).fetchone()
            return (
                int(row[0]) if row else 0,
                int(tup[0]) if tup else 0,
                int(conns[0]) if conns else 0,
            )

        commits0, rows0, _ = stats()
        wall0 = time.perf_counter()
        task = asyncio.ensure_future(
            open_streams(
                server.target,
                streams=streams,
                ramp=tokens / 20,
                cap=tokens / 20 * 4 + 10,
                token_size=TOKEN_SIZE,
            )
        )
        samples: list[int] = []
        while not task.done():
            await asyncio.sleep(0.25)
            samples.append(stats()[2])
        results = task.result()
        wall = time.perf_counter() - wall0
        await asyncio.sleep(1.5)  # PostgreSQL publishes its statistics about once a second
        commits1, rows1, _ = stats()
    received = sum(r.tokens for r in results)
    return {
        "streams": streams,
        "completed": sum(1 for r in results if r.done),
        "tokens": received,
        "seconds": round(wall, 2),
        "commits_per_s": round((commits1 - commits0) / wall, 1),
        "rows_written_per_s": round((rows1 - rows0) / wall, 1),
        "tokens_per_s": round(received / wall, 1),
        "rows_per_token": round((rows1 - rows0) / received, 4) if received else None,
        "max_db_connections": max(samples, default=0),
        "median_db_connections": sorted(samples)[len(samples) // 2] if samples else 0,
    }


# -- report ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(ours: float | None, base: float | None) -> str:
    if ours is None or base is None or base == 0:
        return "-"
    return f"{ours / base:.2f}x"


def table(results: dict[str, Any]) -> str:
    """The figures (a column per server), then the ratios (a column per pair)."""
    servers = results["servers"]
    ours = [s for s in servers if s not in BASELINES]
    bases = [s for s in servers if s in BASELINES]
    pairs = [(o, b) for o in ours for b in bases]
    for o in ours:
        if o.startswith("before"):
            continue
        before = o.replace("ours", "before")
        if before in servers:
            pairs.append((o, before))
    if "ours_redis" in servers and "ours" in servers:
        pairs.append(("ours_redis", "ours"))  # the Redis broker against the memory broker
    figures: list[tuple[str, dict[str, Any], int]] = []

    def add(label: str, values: dict[str, Any], digits: int = 1) -> None:
        figures.append((label, values, digits))

    lat = results.get("latency")
    if lat:
        add("latency: direct TTFT p50 ms", {"direct": lat["direct"]["p50_ms"]}, 2)
        add("latency: added TTFT p50 ms", {s: lat[s]["added_p50_ms"] for s in servers}, 2)
        add("latency: added TTFT p99 ms", {s: lat[s]["added_p99_ms"] for s in servers}, 2)
    thr = results.get("throughput")
    if thr:
        add("throughput: CPU us/event", {s: thr[s]["us_per_event"] for s in servers})
        add("throughput: events/s per core", {s: thr[s]["events_per_core_s"] for s in servers}, 0)
        add("throughput: events/s (wall)", {s: thr[s]["events_per_s"] for s in servers}, 0)
        add("throughput: server CPU share", {s: thr[s]["server_cpu_share"] for s in servers}, 2)
        add("throughput: loadgen CPU share", {s: thr[s]["loadgen_cpu_share"] for s in servers}, 2)
        add("throughput: upstream CPU share", {s: thr[s]["upstream_cpu_share"] for s in servers}, 2)
        add("throughput: spread of runs %", {s: thr[s]["spread_pct"] for s in servers})
    costs = results.get("costs")
    if costs:
        add("costs: CPU us per stream", {s: costs[s]["us_per_stream"] for s in servers}, 0)
        add("costs: CPU us per token", {s: costs[s]["us_per_token"] for s in servers})
        add(
            "costs: us/token, 10-token answers",
            {s: costs[s].get("us_per_token_10") for s in servers},
        )
        add(
            "costs: us/token, 400-token answers",
            {s: costs[s].get("us_per_token_400") for s in servers},
        )
    cap = results.get("capacity")
    if cap:
        add("capacity: streams at 20 tok/s", {s: cap[s]["max_streams"] for s in servers}, 0)
        add("capacity: events/s at max", {s: cap[s]["events_per_s_at_max"] for s in servers}, 0)
    mem = results.get("memory")
    if mem:
        add("memory: KB RSS per open stream", {s: mem[s]["kb_per_stream"] for s in servers})
    db = results.get("database") or {}
    if db and "skipped" not in db:
        add("database: streams", {s: v["streams"] for s, v in db.items()}, 0)
        add("database: completed", {s: v["completed"] for s, v in db.items()}, 0)
        add("database: commits/s", {s: v["commits_per_s"] for s, v in db.items()})
        add("database: rows written/s", {s: v["rows_written_per_s"] for s, v in db.items()})
        add("database: tokens/s", {s: v["tokens_per_s"] for s, v in db.items()})
        add("database: max connections", {s: v["max_db_connections"] for s, v in db.items()}, 0)
    columns = ["direct", *servers] if lat else list(servers)
    header = ["figure", *columns]
    rows = [[label, *(_fmt(v.get(c), d) for c in columns)] for label, v, d in figures]
    text = _grid(header, rows)
    if pairs:
        header = ["ratio (ours / other)", *(f"{o}/{b}" for o, b in pairs)]
        rows = [
            [label, *(_ratio(v.get(o), v.get(b)) for o, b in pairs)]
            for label, v, _ in figures
            if any(v.get(o) is not None for o, _ in pairs)
            and "share" not in label
            and "spread" not in label
        ]
        text += "\n\n" + _grid(header, rows)
    if db and "skipped" in db:
        text += f"\n\ndatabase: {db['skipped']}"
    return text


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------

SCENARIOS = {
    "latency": scenario_latency,
    "memory": scenario_memory,
    "throughput": scenario_throughput,
    "costs": scenario_costs,
    "capacity": scenario_capacity,
    "database": scenario_database,
}


def raise_fd_limit() -> tuple[int, int]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@contextlib.contextmanager
def running(bench: Bench) -> Iterator[Bench]:
    try:
        bench.start()
        yield bench
    finally:
        bench.stop()


async def run_all(bench: Bench, names: list[str], quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.monotonic()
        print(f"== {name} …", flush=True)
        results[name] = await SCENARIOS[name](bench, quick)
        print(f"   {time.monotonic() - t0:.0f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~2-minute run")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--servers",
        default="starlette,django,ours,ours_pg,ours_redis",
        help="comma-separated: starlette, django, ours, ours_pg (needs DATABASE_URL), "
        "ours_redis (needs REDIS_URL), ours_demo (the demo's whole middleware stack)",
    )
    parser.add_argument("--clients", type=int, default=50, help="throughput clients")
    parser.add_argument("--max-streams", type=int, default=3200, help="capacity ceiling")
    parser.add_argument(
        "--db-streams", type=int, default=0, help="database scenario streams (1000; quick 300)"
    )
    parser.add_argument("--loop", default="auto", help="uvicorn --loop for every server")
    parser.add_argument("--http", default="auto", help="uvicorn --http for every server")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another copy of the project (with django_llmstream/ and testproject/) to measure "
        "as 'before' (and 'before_pg') in the same run",
    )
    parser.add_argument("--label", default="", help="a name for the JSON file")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file to write")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    limits = raise_fd_limit()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {CLIENT_CORE})
    started = time.monotonic()
    bench = Bench(args)
    with running(bench):
        results = asyncio.run(run_all(bench, names, args.quick))
    results["servers"] = list(bench.servers)
    results["meta"] = {
        "quick": args.quick,
        "label": args.label,
        "seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
        "fd_limit": limits,
        "loop": args.loop,
        "http": args.http,
        "token_size": TOKEN_SIZE,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print()
    print(table(results))
    out = args.out or RESULTS / (
        f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-' + args.label if args.label else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {out}")
    shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
