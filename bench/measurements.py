"""
What a benchmark run measures: the scenarios, wrk's load on a target, the CPU
it spends, and its memory with idle connections.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from processes import RunFailed, Supervisor
from targets import BENCH, Target, find_tool

# Seconds an idle connection may take to connect, and a target to take them all.
CONNECT_TIMEOUT = 5.0
SETTLE_TIMEOUT = 15.0
IDLE_BATCH = 25
# Past this, wrk counts a request as timed out and leaves it out of the
# latencies; a request delayed by a retransmitted SYN (1 s, then 3 s) is kept.
WRK_TIMEOUT = "10s"
# One run of wrk may take this long past its duration before it is killed.
WRK_GRACE = 30.0

PLAIN_KINDS = ("origin", "http", "tcp")
TLS_KINDS = ("tls",)


@dataclass(frozen=True)
class Scenario:
    """
    One load put on a target.

    @ivar name: how the report names it.
    @ivar path: the path requested.
    @ivar close: whether each request asks for C{Connection: close}, on a new
        connection each.
    @ivar tool: what loads it: C{"wrk"}, C{"s_time"} (full TLS handshakes,
        bench/tls.py) or C{"h2load"} (HTTP/2, bench/tls.py).
    @ivar kinds: the kinds of target it loads.
    """

    name: str
    path: str
    close: bool
    tool: str = "wrk"
    kinds: tuple[str, ...] = PLAIN_KINDS

    def loads(self, target: Target) -> bool:
        """
        Whether this scenario runs on C{target}.
        """
        return target.kind in self.kinds and self.tool in target.tools


SCENARIOS = (
    Scenario("small keep-alive", "/small", close=False),
    Scenario("small close", "/small", close=True),
    Scenario("large keep-alive", "/large", close=False),
    Scenario("large close", "/large", close=True),
    Scenario("TLS new connections", "/small", close=True, tool="s_time", kinds=TLS_KINDS),
    Scenario("HTTPS keep-alive", "/small", close=False, kinds=TLS_KINDS),
    Scenario("HTTP/2", "/small", close=False, tool="h2load", kinds=TLS_KINDS),
)


@dataclass(frozen=True)
class Settings:
    """
    How a run loads each target.

    @ivar duration: seconds of each measured wrk run.
    @ivar warm_up: seconds of the unmeasured wrk run before them.
    @ivar connections: wrk's connections.
    @ivar idle: idle connections held for the memory measurement.
    @ivar rounds: how many times each scenario is run on each target.
    @ivar handshake_clients: openssl s_time processes making new TLS
        connections at once, each one at a time.
    """

    duration: int
    warm_up: int
    connections: int
    idle: int
    rounds: int
    handshake_clients: int = 32


@dataclass(frozen=True)
class Measurement:
    """
    What one run of a load tool measured.

    @ivar requests_per_second: requests completed per second.
    @ivar p50: median latency, in milliseconds, or L{None} if the tool gives none.
    @ivar p99: 99th percentile latency, in milliseconds, or L{None}.
    @ivar errors: the tool's error counts (for wrk: connect, read, write,
        status: non-2xx or 3xx responses, timeout), those above zero only.
    @ivar requests: requests completed.
    @ivar cpu_per_request: the CPU time (user and system) the target and its
        children spent during the run, per request completed, in
        microseconds; or L{None} if not measured.
    """

    requests_per_second: float
    p50: float | None
    p99: float | None
    errors: dict[str, int]
    requests: int = 0
    cpu_per_request: float | None = None


def run_wrk(
    supervisor: Supervisor,
    port: int,
    scenario: Scenario,
    duration: int,
    connections: int,
    scheme: str = "http",
) -> Measurement:
    """
    Load a target with wrk, one thread, for C{duration} seconds.

    Over https, wrk offers no ALPN (so every server speaks HTTP/1.1) and
    resumes its TLS session when it reconnects.

    @raise RunFailed: if wrk fails or completes no request.
    """
    headers = ["Connection: close"] if scenario.close else []
    url = f"{scheme}://127.0.0.1:{port}{scenario.path}"
    return load_with_wrk(supervisor, url, duration, connections, headers)


def load_with_wrk(
    supervisor: Supervisor,
    url: str,
    duration: int,
    connections: int,
    headers: Sequence[str] = (),
) -> Measurement:
    """
    Load C{url} with wrk, one thread, for C{duration} seconds, sending
    C{headers} with each request, and read what wrk_json.lua prints.

    @raise RunFailed: if wrk fails or completes no request.
    """
    wrk = find_tool("wrk")
    if wrk is None:
        raise RunFailed("wrk is not installed: run bench/setup.sh")
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", WRK_TIMEOUT]
    argv += ["-s", str(BENCH / "wrk_json.lua")]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    output = supervisor.run("wrk", argv, duration + WRK_GRACE)
    found = re.search(r"^BENCH-JSON (.*)$", output, re.MULTILINE)
    if found is None:
        raise RunFailed(f"wrk printed no result: {output.strip()[-200:]}")
    numbers = json.loads(found.group(1))
    if numbers["requests"] == 0:
        raise RunFailed(f"no request completed: {numbers['errors']}")
    return Measurement(
        requests_per_second=numbers["requests"] / (numbers["duration_us"] / 1e6),
        p50=numbers["p50_us"] / 1000,
        p99=numbers["p99_us"] / 1000,
        errors={name: count for name, count in numbers["errors"].items() if count},
        requests=numbers["requests"],
    )


def process_tree(pid: int) -> list[int]:
    """
    C{pid} and all its descendants (an nginx master and its worker).
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def tree_rss(pid: int) -> int:
    """
    The resident memory of C{pid} and its descendants, in KiB (C{VmRSS}).
    """
    total = 0
    for each in process_tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total += int(found.group(1)) if found else 0
    return total


def tree_cpu(pid: int) -> float:
    """
    The CPU time, user and system, that C{pid} and its descendants have spent, in seconds.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for each in process_tree(pid):
        try:
            stat = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # utime and stime, fields 14 and 15 of proc(5), counting from the pid.
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def tree_open_files(pid: int) -> int:
    """
    How many file descriptors C{pid} and its descendants hold.
    """
    total = 0
    for each in process_tree(pid):
        try:
            total += len(os.listdir(f"/proc/{each}/fd"))
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class IdleMemory:
    """
    A target's memory before and while it holds idle client connections.

    @ivar before: its RSS before they were opened, in KiB.
    @ivar during: its RSS while they were held, in KiB.
    @ivar held: how many it still held when C{during} was read.
    """

    before: int
    during: int
    held: int


def _still_open(connection: socket.socket) -> bool:
    """
    Whether the peer has not closed an idle connection.
    """
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return True
    try:
        return connection.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def _wait_for_files(pid: int, at_least: int, timeout: float) -> int:
    """
    Wait until C{pid} and its descendants hold C{at_least} file descriptors,
    or C{timeout} seconds pass; return how many they hold.
    """
    deadline = time.monotonic() + timeout
    files = tree_open_files(pid)
    while files < at_least and time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.01)
        files = tree_open_files(pid)
    return files


def measure_idle(pid: int, port: int, count: int) -> IdleMemory:
    """
    Open C{count} client connections to a target, send nothing on them, and
    read its RSS once it has taken them all.

    They are opened L{IDLE_BATCH} at a time, each batch once the target has
    accepted the last: a Twisted listener's backlog is 50, and a connection
    past it waits a second for its SYN to be sent again. The target has taken
    them all when its open file count has grown by at least C{count} and
    stopped growing (a relay also opens one upstream connection for each),
    or after L{SETTLE_TIMEOUT} seconds.
    """
    before, files_before = tree_rss(pid), tree_open_files(pid)
    connections: list[socket.socket] = []
    try:
        while len(connections) < count:
            try:
                for _ in range(min(IDLE_BATCH, count - len(connections))):
                    connections.append(
                        socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
                    )
            except OSError:
                break
            _wait_for_files(pid, files_before + len(connections), timeout=2.0)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        files = _wait_for_files(pid, files_before + len(connections), SETTLE_TIMEOUT)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            files, previous = tree_open_files(pid), files
            if files == previous:
                break
        during = tree_rss(pid)
        held = sum(1 for connection in connections if _still_open(connection))
    finally:
        for connection in connections:
            connection.close()
    return IdleMemory(before, during, held)


@dataclass
class Outcome:
    """
    What became of one target in a run.

    @ivar target: the target.
    @ivar skipped: why it was not measured, or L{None}.
    @ivar runs: by scenario name, a L{Measurement} for each round measured.
    @ivar failures: by scenario name, why the last failed run gave nothing.
    @ivar memory: its idle-connection memory, if measured.
    @ivar rss_after_load: its RSS after the last load, in KiB, if measured.
    @ivar negotiated: for a TLS target, the protocol version and cipher its
        probe negotiated, in a few words.
    """

    target: Target
    skipped: str | None = None
    runs: dict[str, list[Measurement]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    memory: IdleMemory | None = None
    rss_after_load: int | None = None
    negotiated: str | None = None

    def result(self, scenario: str) -> Measurement | str | None:
        """
        The median of the rounds of C{scenario}, or why none was measured, or
        L{None} if it was not run.
        """
        runs = self.runs.get(scenario)
        if not runs:
            return self.failures.get(scenario)
        errors: dict[str, int] = {}
        for run in runs:
            for name, count in run.errors.items():
                errors[name] = errors.get(name, 0) + count
        return Measurement(
            requests_per_second=statistics.median(run.requests_per_second for run in runs),
            p50=_median([run.p50 for run in runs]),
            p99=_median([run.p99 for run in runs]),
            errors=errors,
            requests=sum(run.requests for run in runs),
            cpu_per_request=_median([run.cpu_per_request for run in runs]),
        )


def _median(values: list[float | None]) -> float | None:
    """
    The median of C{values}, or L{None} if any is missing.
    """
    present = [value for value in values if value is not None]
    return statistics.median(present) if present and len(present) == len(values) else None
