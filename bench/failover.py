"""
Failover under load (issue 6): not one request fails while a pool's servers come and go.

    python bench/failover.py [--duration S] [--connections N]

Four origins (each one nginx process answering with its name, C{o1} to
C{o4}) and txproxy (C{twistd -n txproxy --config FILE}, admin API on) with a
pool C{web} of the first three. wrk sends kept-alive GETs through txproxy for
C{--duration} seconds (20), and at fixed fractions of the run (3, 6, 9, 12
and 15 s of 20):

1. origin 1 is killed with SIGKILL;
2. origin 4 is added through the admin API (C{POST /pools/web/servers});
3. origin 2 is drained and removed through the admin API (C{DELETE});
4. the configuration file is rewritten (the C{X-Config} response header,
   origin 3's weight) and txproxy gets SIGHUP;
5. it is rewritten again, to the pool as the admin API left it (origins 3
   and 4, C{X-Config} three), and txproxy gets SIGHUP again.

The report, on standard output, is markdown: wrk's result (requests,
responses by status and by C{X-Config}, non-2xx, socket errors), the
timeline (each step, each change of a server's status as the admin API
shows it, and txproxy's log lines about servers and reloads), and how many
requests each origin answered in each second. The run succeeds (exit status
0) when no request failed. Progress goes to standard error.

Everything listens on 127.0.0.1 on free ports and runs in a temporary
directory; every process is ended when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Set before the modules beside this one are imported: a run writes nothing
# into the repository, not even their bytecode.
sys.dont_write_bytecode = True

from processes import START_TIMEOUT, Process, StartFailed, Supervisor, free_ports  # noqa: E402

BENCH = Path(__file__).resolve().parent
# Debian puts nginx in /usr/sbin, which a user's PATH may lack.
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
POOL = "web"
# Seconds wrk may run past its duration before it is taken as hung.
WRK_GRACE = 15.0
# Seconds between two looks at the pool through the admin API.
LOOK_EVERY = 0.2

CONFIG = """\
# Written by bench/failover.py for one run, and rewritten before each SIGHUP.
from txproxy.config import Admin, HealthCheck, HTTPListener, Pool, Proxy, Route, Server

web = Pool(
    "web",
    servers=[{servers}],
    health=HealthCheck(path="/healthz", interval=0.5, timeout=1.0, rise=2, fall=2),
)
proxy = Proxy(
    listeners=[
        HTTPListener(
            "tcp:{listen}:interface=127.0.0.1",
            routes=[Route(web, set_response_headers=[("X-Config", "{version}")])],
        )
    ],
    admin=Admin("tcp:{admin}:interface=127.0.0.1"),
    drain_timeout=2,
)
"""

# txproxy's log lines worth a place in the timeline, besides every warning and error.
RELEVANT = re.compile(r"^(server |admin: |reload|txproxy starting|listener )")
# One line of failover_log.observer: time, system with level, text.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d{4}) \[([^\]]*)\] (.*)$")


def progress(message: str) -> None:
    """
    Say what the run is doing, on standard error.
    """
    print(f"failover: {message}", file=sys.stderr, flush=True)


def find_tool(name: str) -> str | None:
    """
    The path of an installed program, looking in the sbin directories too.
    """
    return shutil.which(name, path=TOOL_PATH)


@dataclass
class Origin:
    """
    One origin: an nginx process answering C{o<number>}, logging each
    request's time.

    @ivar number: 1 to 4.
    @ivar port: its port on 127.0.0.1.
    @ivar directory: its prefix directory, with its configuration and access log.
    @ivar process: the nginx process, once started.
    """

    number: int
    port: int
    directory: Path
    process: Process | None = None

    @property
    def name(self) -> str:
        return f"o{self.number}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answered(self) -> list[float]:
        """
        When it answered each request but the health checks, in seconds since the epoch.
        """
        try:
            text = (self.directory / "access.log").read_text()
        except OSError:
            return []
        return [float(line.split()[0]) for line in text.splitlines() if line.strip()]


@dataclass
class Timeline:
    """
    What happened in the run, each entry with its time from the start of the load.

    @ivar start: when wrk started, in seconds since the epoch.
    @ivar entries: C{(seconds from start, source, text)}.
    """

    start: float = 0.0
    entries: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, source: str, text: str, when: float | None = None) -> None:
        moment = time.time() if when is None else when
        self.entries.append((moment - self.start, source, text))
        if when is None:
            progress(f"{moment - self.start:5.2f} s  {source}: {text}")


def start_origin(supervisor: Supervisor, origin: Origin) -> None:
    """
    Start an origin and wait until it listens.

    @raise StartFailed: when nginx is missing or does not start.
    """
    nginx = find_tool("nginx")
    if nginx is None:
        raise StartFailed("nginx is not installed: run bench/setup.sh")
    origin.directory.mkdir(mode=0o755)
    text = (BENCH / "conf" / "nginx-failover-origin.conf").read_text()
    values = {"DIR": str(origin.directory), "LISTEN": str(origin.port), "NAME": origin.name}
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    conf = origin.directory / "nginx.conf"
    conf.write_text(text)
    argv = [nginx, "-p", f"{origin.directory}/", "-e", "stderr", "-c", str(conf)]
    origin.process = supervisor.start(origin.name, argv)
    supervisor.wait_until_listening(origin.process, origin.port, START_TIMEOUT)


def write_config(
    path: Path, listen: int, admin_port: int, servers: Sequence[tuple[Origin, int]], version: str
) -> None:
    """
    Write txproxy's configuration: the pool's servers as C{(origin, weight)},
    and the C{X-Config} value its route sets on responses.
    """
    listed = ", ".join(f'Server("{origin.address}", weight={weight})' for origin, weight in servers)
    path.write_text(CONFIG.format(servers=listed, listen=listen, admin=admin_port, version=version))


def start_txproxy(supervisor: Supervisor, config: Path, listen: int, admin_port: int) -> Process:
    """
    Start txproxy under C{twistd -n}, logging with microseconds, and wait
    until it listens and its admin API answers.

    @raise StartFailed: when it is not installed or does not start.
    """
    twistd = Path(sys.executable).with_name("twistd")
    if not twistd.exists():
        raise StartFailed(f"twistd is not installed for {sys.executable}: pip install .")
    argv = [str(twistd), "-n", "--pidfile=", "--logger=failover_log.observer"]
    argv += ["txproxy", "--config", str(config)]
    path = os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))
    process = supervisor.start("txproxy", argv, env={"PYTHONPATH": path})
    supervisor.wait_until_listening(process, listen, START_TIMEOUT)
    supervisor.wait_until_listening(process, admin_port, START_TIMEOUT)
    return process


def admin(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    """
    One request to txproxy's admin API: its status and JSON.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class PoolWatch:
    """
    Looks at the pool through the admin API and puts each change of a
    server's status on the timeline.
    """

    def __init__(self, port: int, timeline: Timeline, names: dict[str, str]) -> None:
        self.port = port
        self.timeline = timeline
        self.names = names
        self.statuses: dict[str, str] = {}

    def look(self) -> None:
        try:
            status, document = admin(self.port, "GET", f"/pools/{POOL}")
        except (OSError, ValueError) as error:
            self.timeline.add("admin API", f"GET /pools/{POOL} failed: {error}")
            return
        if status != 200 or not isinstance(document, dict):
            self.timeline.add("admin API", f"GET /pools/{POOL}: {status}")
            return
        now = {server["address"]: server["status"] for server in document["servers"]}
        for address, state in now.items():
            before = self.statuses.get(address)
            if before is None:
                self.timeline.add(
                    "admin API", f"{self.names.get(address, address)} in the pool, {state}"
                )
            elif before != state:
                self.timeline.add("admin API", f"{self.names.get(address, address)} {state}")
        for address in self.statuses.keys() - now.keys():
            self.timeline.add("admin API", f"{self.names.get(address, address)} out of the pool")
        self.statuses = now

    def until(self, deadline: float, done: Callable[[], bool] = lambda: False) -> None:
        """
        Look every L{LOOK_EVERY} seconds until C{deadline} (seconds since the
        epoch), or until C{done()}.
        """
        while time.time() < deadline and not done():
            self.look()
            time.sleep(max(0.0, min(LOOK_EVERY, deadline - time.time())))


@dataclass
class WrkResult:
    """
    What wrk said: its summary, and the counts of bench/failover.lua.
    """

    requests: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    statuses: dict[str, int] = field(default_factory=dict)
    configs: dict[str, int] = field(default_factory=dict)
    latency: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        """
        Requests that failed: non-2xx or 3xx, and socket errors.
        """
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(output: str) -> WrkResult:
    """
    Read wrk's summary and the script's lines.
    """
    result = WrkResult()
    found = re.search(r"(\d+) requests in ([\d.]+)(\w+),", output)
    if found:
        result.requests = int(found.group(1))
        scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}.get(found.group(3), 1.0)
        result.seconds = float(found.group(2)) * scale
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if found:
        result.rate = float(found.group(1))
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if found:
        result.non_2xx = int(found.group(1))
    found = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if found:
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, found.groups()), strict=True)
        )
    for label, counts in (("STATUS", result.statuses), ("CONFIG", result.configs)):
        found = re.search(rf"^FAILOVER-{label} (.*)$", output, re.MULTILINE)
        if found:
            for part in found.group(1).split():
                key, _, count = part.partition("=")
                counts[key] = int(count)
    for percentile in ("50", "99"):
        found = re.search(rf"^\s+{percentile}(?:\.000)?%\s+(\S+)", output, re.MULTILINE)
        if found:
            result.latency[percentile] = found.group(1)
    return result


def txproxy_lines(output: str, timeline: Timeline, names: dict[str, str]) -> list[str]:
    """
    Put txproxy's log lines about servers and reloads on the timeline, and
    every warning and error; repeated C{connect to server ... failed} lines
    become one entry with their count.

    @return: the lines taken, as logged, for the report.
    """
    taken: list[str] = []
    failed_connects: dict[str, list[float]] = {}
    for line in output.splitlines():
        found = LOG_LINE.match(line)
        if found is None:
            continue
        stamp, system, text = found.groups()
        level = system.rpartition("#")[2]
        if level == "debug" or not (RELEVANT.match(text) or level in ("warn", "error", "critical")):
            continue
        when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        taken.append(line)
        connect = re.match(r"connect to server (\S+) of pool \S+ failed", text)
        if connect:
            failed_connects.setdefault(connect.group(1), []).append(when)
            continue
        timeline.add("txproxy", with_names(f"[{level}] {text}", names), when)
    for address, times in failed_connects.items():
        text = (
            f"[warn] connect to server {address} failed {len(times)} time(s), the last"
            f" at {times[-1] - timeline.start:.2f} s (each retried on another server)"
        )
        timeline.add("txproxy", with_names(text, names), times[0])
    return taken


def with_names(text: str, names: dict[str, str]) -> str:
    """
    Name the origins in a line: C{127.0.0.1:PORT} becomes C{o1}.
    """
    for address, name in names.items():
        text = text.replace(address, name)
    return text


def per_second(origins: Sequence[Origin], start: float, duration: int) -> list[str]:
    """
    The markdown table of requests each origin answered in each second of the load.
    """
    counts = {origin.name: [0] * (duration + 2) for origin in origins}
    for origin in origins:
        for moment in origin.answered():
            second = int(moment - start)
            if 0 <= second < len(counts[origin.name]):
                counts[origin.name][second] += 1
    names = [origin.name for origin in origins]
    lines = ["| second | " + " | ".join(names) + " | all |", "|---:|" + "---:|" * (len(names) + 1)]
    for second in range(duration + 2):
        row = [counts[name][second] for name in names]
        lines.append(f"| {second} | " + " | ".join(map(str, row)) + f" | {sum(row)} |")
    return lines


def version_of(argv: Sequence[str]) -> str:
    """
    The first line a program prints about its version.
    """
    try:
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as error:
        return str(error)
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    return lines[0].partition(" Copyright")[0] if lines else "?"


@dataclass
class Run:
    """
    One run: its settings, processes and what happened.
    """

    duration: int
    connections: int
    directory: Path
    supervisor: Supervisor
    origins: list[Origin] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    listen: int = 0
    admin_port: int = 0
    config: Path = Path()
    txproxy: Process | None = None
    removed_at: float | None = None
    added_at: float | None = None

    @property
    def names(self) -> dict[str, str]:
        return {origin.address: origin.name for origin in self.origins}

    def origin(self, number: int) -> Origin:
        return self.origins[number - 1]

    def start(self) -> None:
        """
        Start the origins and txproxy, and wait until the pool's servers are up.
        """
        ports = free_ports(6)
        self.listen, self.admin_port = ports[4], ports[5]
        for number in range(1, 5):
            origin = Origin(number, ports[number - 1], self.directory / f"o{number}")
            start_origin(self.supervisor, origin)
            self.origins.append(origin)
        self.config = self.directory / "txproxy.py"
        self.write([(1, 1), (2, 1), (3, 1)], "one")
        self.txproxy = start_txproxy(self.supervisor, self.config, self.listen, self.admin_port)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            _, document = admin(self.admin_port, "GET", f"/pools/{POOL}")
            assert isinstance(document, dict)
            if all(server["status"] == "up" for server in document["servers"]):
                return
            time.sleep(0.1)
        raise StartFailed("the pool's servers did not come up")

    def write(self, servers: Sequence[tuple[int, int]], version: str) -> None:
        """
        Write the configuration: servers as C{(origin number, weight)}.
        """
        chosen = [(self.origin(number), weight) for number, weight in servers]
        write_config(self.config, self.listen, self.admin_port, chosen, version)

    # The steps, each returning what came of it.

    def kill_origin_1(self) -> str:
        process = self.origin(1).process
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.popen.wait()
        return f"pid {process.pid} gone"

    def add_origin_4(self) -> str:
        status, _ = admin(
            self.admin_port, "POST", f"/pools/{POOL}/servers", {"address": self.origin(4).address}
        )
        self.added_at = time.time()
        return f"answered {status}"

    def remove_origin_2(self) -> str:
        status, _ = admin(
            self.admin_port, "DELETE", f"/pools/{POOL}/servers/{self.origin(2).address}"
        )
        return f"answered {status}"

    def reload(self, servers: Sequence[tuple[int, int]], version: str) -> str:
        self.write(servers, version)
        assert self.txproxy is not None
        os.kill(self.txproxy.pid, signal.SIGHUP)
        return "sent"

    def load(self) -> str:
        """
        Run wrk and the steps beside it; return wrk's output.
        """
        wrk = find_tool("wrk")
        if wrk is None:
            raise StartFailed("wrk is not installed: run bench/setup.sh")
        argv = [wrk, "-t1", f"-c{self.connections}", f"-d{self.duration}s", "--timeout", "5s"]
        argv += ["--latency", "-s", str(BENCH / "failover.lua"), f"http://127.0.0.1:{self.listen}/"]
        watch = PoolWatch(self.admin_port, self.timeline, self.names)
        process = self.supervisor.start("wrk", argv)
        self.timeline.start = time.time()
        self.timeline.add("bench", f"wrk started: {self.connections} kept-alive connections")
        watch.look()
        steps: list[tuple[float, str, Callable[[], str]]] = [
            (0.15, "SIGKILL origin 1", self.kill_origin_1),
            (0.30, "admin API: POST origin 4", self.add_origin_4),
            (0.45, "admin API: DELETE origin 2 (drain, then remove)", self.remove_origin_2),
            (
                0.60,
                "config rewritten (X-Config two, o3 weight 2), SIGHUP",
                lambda: self.reload([(1, 1), (2, 1), (3, 2)], "two"),
            ),
            (
                0.75,
                "config rewritten (o3 weight 2 and o4: the pool as the API left it,"
                " X-Config three), SIGHUP",
                lambda: self.reload([(3, 2), (4, 1)], "three"),
            ),
        ]
        for fraction, what, step in steps:
            watch.until(self.timeline.start + fraction * self.duration)
            self.timeline.add("bench", f"{what}: {step()}")
        removed = self.origin(2).address
        watch.until(
            self.timeline.start + self.duration + WRK_GRACE,
            lambda: process.popen.poll() is not None,
        )
        self.removed_at = next(
            (
                self.timeline.start + moment
                for moment, source, text in self.timeline.entries
                if source == "admin API" and text == f"{self.names[removed]} out of the pool"
            ),
            None,
        )
        if process.popen.poll() is None:
            self.supervisor.stop(process)
            raise StartFailed(f"wrk did not end within {self.duration + WRK_GRACE:.0f} s")
        self.timeline.add("bench", f"wrk done (exit status {process.popen.returncode})")
        return process.output()


def report(run: Run, wrk: WrkResult, taken: Sequence[str], command: str, started: str) -> str:
    """
    The run's markdown report.
    """
    lines = [f"### Failover under load, {started}", "", f"    {command}", ""]
    lines.append(
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; "
        f"{version_of([find_tool('nginx') or 'nginx', '-v'])}; "
        f"{version_of([find_tool('wrk') or 'wrk', '-v'])}; Python {platform.python_version()}."
    )
    lines += ["", "Origins: " + ", ".join(f"{o.name} = {o.address}" for o in run.origins) + "."]
    errors = ", ".join(f"{name} {count}" for name, count in wrk.socket_errors.items())
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(wrk.statuses.items()))
    configs = ", ".join(f"{name}: {count}" for name, count in sorted(wrk.configs.items()))
    verdict = "no request failed" if wrk.failed == 0 else f"{wrk.failed} requests FAILED"
    lines += [
        "",
        f"**Result: {wrk.requests} requests in {wrk.seconds:.1f} s ({wrk.rate:.0f}/s, p50"
        f" {wrk.latency.get('50', '?')}, p99 {wrk.latency.get('99', '?')}); non-2xx or 3xx:"
        f" {wrk.non_2xx}; socket errors: {errors}. {verdict}.**",
        "",
        f"Responses by status: {statuses or 'none counted'}. By X-Config (the"
        f" configuration that answered): {configs or 'none counted'}.",
        "",
    ]
    answered = {origin.name: origin.answered() for origin in run.origins}
    start = run.timeline.start
    checks = []
    o1 = answered["o1"]
    if o1:
        checks.append(f"o1 answered its last request at {o1[-1] - start:.2f} s.")
    if run.added_at is not None:
        after = [moment for moment in answered["o4"] if moment >= run.added_at]
        checks.append(
            f"o4 answered {len(after)} requests after it was added"
            f" ({run.added_at - start:.2f} s), the first at"
            f" {(after[0] - start) if after else float('nan'):.2f} s."
        )
    if run.removed_at is not None:
        after = [moment for moment in answered["o2"] if moment > run.removed_at]
        before = [moment for moment in answered["o2"] if moment <= run.removed_at]
        checks.append(
            f"o2 answered its last request at {before[-1] - start:.2f} s, left the pool by"
            f" {run.removed_at - start:.2f} s (as the admin API showed), and answered"
            f" {len(after)} requests after."
        )
    lines += checks + ["", "#### Timeline", "", "| time (s) | source | event |", "|---:|---|---|"]
    for moment, source, text in sorted(run.timeline.entries, key=lambda entry: entry[0]):
        lines.append(f"| {moment:.2f} | {source} | {text.replace('|', '/')} |")
    lines += ["", "#### Requests answered by each origin, per second of the load", ""]
    lines += per_second(run.origins, start, run.duration)
    lines += ["", "#### txproxy's log: servers, admin changes, reloads, warnings", "", "```"]
    lines += [with_names(line, run.names) for line in taken]
    lines += ["```", ""]
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/failover.py",
        description="Failover under load: txproxy's pool while origins are killed, added,"
        " removed and the configuration reloaded, under wrk.",
    )
    parser.add_argument("--duration", type=int, default=20, help="seconds of load (default 20)")
    parser.add_argument(
        "--connections", type=int, default=50, help="wrk's kept-alive connections (default 50)"
    )
    arguments = parser.parse_args(argv)
    if arguments.duration < 5:
        parser.error("--duration must be at least 5")
    if arguments.connections < 1:
        parser.error("--connections must be at least 1")
    return arguments


def main(argv: Sequence[str]) -> int:
    """
    Run the scenario and print its report; return 0 when no request failed.
    """
    arguments = parse_arguments(argv)
    missing = [tool for tool in ("nginx", "wrk") if find_tool(tool) is None]
    if missing:
        progress(f"missing: {', '.join(missing)}; install with: sudo sh bench/setup.sh")
        return 2
    command = " ".join(["python bench/failover.py", *argv])
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    # SIGTERM and SIGHUP end the run as Ctrl-C does: every process is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="txproxy-failover-") as temporary:
        directory = Path(temporary)
        directory.chmod(0o755)
        try:
            with Supervisor(directory) as supervisor:
                run = Run(arguments.duration, arguments.connections, directory, supervisor)
                progress(f"{command}: starting four origins and txproxy")
                run.start()
                progress(f"loading for {run.duration} s")
                output = run.load()
                assert run.txproxy is not None
                # Stopped here, so that its log is complete before it is read.
                supervisor.stop(run.txproxy)
                wrk = parse_wrk(output)
                taken = txproxy_lines(run.txproxy.output(), run.timeline, run.names)
                text = report(run, wrk, taken, command, started)
        except StartFailed as failed:
            progress(f"failed: {failed.reason}")
            return 1
        except KeyboardInterrupt:
            progress("interrupted")
            return 130
    print(text, end="")
    if wrk.requests == 0:
        progress("wrk completed no request:\n" + output)
        return 1
    return 0 if wrk.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
