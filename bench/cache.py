"""
Benchmark txproxy's cache and compression beside nginx's, in one run on one machine (issue 7).

    python bench/cache.py [--duration S] [--connections N] [--rounds N] [--level N] [--quick]

One origin (nginx, one worker, serving /small, 100 bytes, and /data.json,
64 KiB of JSON, both with C{Cache-Control: max-age=3600}, an ETag and a
Last-Modified; never compressed) and four proxies in front of it, each one
process with one worker:

  - C{nginx-cache}: C{proxy_cache} (with C{proxy_cache_lock}) and C{gzip} of
    JSON at C{--level}; the cache's files are read through the page cache.
  - C{txproxy-cache}: a route with C{Cache()} and C{Compression(gzip, level)}.
  - C{nginx-gzip}: C{proxy_pass} and C{gzip} of JSON at C{--level}, no cache.
  - C{txproxy-gzip}: a route with C{Compression(gzip, level)}, no cache.

wrk (one thread, C{--connections} kept-alive connections) loads one target at
a time in three scenarios, each compared with its nginx:

  1. cache hits of the small body; for reference, the origin alone and the two
     proxies without a cache forwarding the same request;
  2. gzip of the JSON body, C{Accept-Encoding: gzip}, no cache: every
     response compressed anew;
  3. the same request on the caching proxies: txproxy serves the gzip variant
     it stored; nginx serves its stored response and compresses it again.

Before each scenario every target is asked twice and must answer 200 with
the right body (decoded), the second time from its cache where it has one
(C{Cache-Status: txproxy; hit}, nginx's C{X-Cache-Status: HIT}), and
gzipped where asked. The report, markdown on standard output, gives
requests/s, latencies, the CPU time each target spent per request, and the
ratios to nginx; progress goes to standard error. Everything runs on
127.0.0.1 on free ports from a temporary directory, and every process is
ended when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import http.client
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Set before the modules beside this one are imported: a run writes nothing
# into the repository, not even their bytecode.
sys.dont_write_bytecode = True

from measurements import Measurement, load_with_wrk, tree_cpu  # noqa: E402
from processes import (  # noqa: E402
    START_TIMEOUT,
    Process,
    RunFailed,
    StartFailed,
    Supervisor,
    capture,
    free_ports,
)
from report import machine, markdown_table  # noqa: E402
from targets import BENCH, find_tool, render  # noqa: E402

SMALL = b"s" * 99 + b"\n"
JSON = json.dumps(
    {
        "items": [
            {"id": number, "name": f"item {number}", "price": number * 1.25, "tags": ["a", "b"]}
            for number in range(1000)
        ]
    }
).encode()[: 64 * 1024 - 2]
# Cut to 64 KiB and closed again, so that it stays valid JSON of that size.
JSON = JSON[: JSON.rfind(b"},") + 1] + b"]}"
WRK_TIMEOUT = "10s"
WRK_GRACE = 30.0

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """
    Say what the run is doing, on standard error, with the seconds since it started.
    """
    print(f"[{time.monotonic() - _STARTED:4.0f} s] {message}", file=sys.stderr, flush=True)


Launcher = Callable[[Supervisor, int, int, int], Process]
"""
Starts a target: given the supervisor, its port, the origin's port and the gzip level.
"""


@dataclass(frozen=True)
class Target:
    """
    One program measured.

    @ivar name: its name in the report.
    @ivar description: what it is.
    @ivar launch: starts it.
    @ivar hit: the response field and value prefix that mark an answer from
        its cache, or L{None} for a target without one.
    """

    name: str
    description: str
    launch: Launcher
    hit: tuple[str, str] | None = None


def _directory(supervisor: Supervisor, name: str) -> Path:
    directory = supervisor.directory / name
    directory.mkdir(mode=0o755, exist_ok=True)
    return directory


def _nginx(supervisor: Supervisor, name: str, template: str, values: dict[str, str]) -> Process:
    nginx = find_tool("nginx")
    if nginx is None:
        raise StartFailed("nginx is not installed: run bench/setup.sh")
    directory = _directory(supervisor, name)
    conf = render(template, directory / "nginx.conf", {"DIR": str(directory), **values})
    return supervisor.start(name, [nginx, "-p", f"{directory}/", "-e", "stderr", "-c", str(conf)])


def launch_origin(supervisor: Supervisor, port: int, origin: int, level: int) -> Process:
    """
    Start the origin: nginx serving the two bodies from files, cacheable for an hour.
    """
    www = _directory(supervisor, "origin") / "www"
    www.mkdir(mode=0o755)
    (www / "small").write_bytes(SMALL)
    (www / "data.json").write_bytes(JSON)
    return _nginx(supervisor, "origin", "nginx-cache-origin.conf", {"LISTEN": str(port)})


def nginx_launcher(name: str, cache: bool) -> Launcher:
    """
    Start nginx as a proxy with gzip, and C{proxy_cache} if C{cache}.
    """

    def launch(supervisor: Supervisor, port: int, origin: int, level: int) -> Process:
        directory = _directory(supervisor, name)
        values = {
            "LISTEN": str(port),
            "ORIGIN": str(origin),
            "GZIP": "on",
            "LEVEL": str(level),
            "CACHE_PATH": "",
            "CACHE": "",
        }
        if cache:
            values["CACHE_PATH"] = (
                f"proxy_cache_path {directory}/cache levels=1:2 keys_zone=bench:16m "
                "max_size=256m inactive=1h use_temp_path=off;"
            )
            values["CACHE"] = (
                "proxy_cache bench; proxy_cache_lock on; "
                "add_header X-Cache-Status $upstream_cache_status;"
            )
        return _nginx(supervisor, name, "nginx-cache.conf", values)

    return launch


def txproxy_launcher(name: str, cache: bool) -> Launcher:
    """
    Start txproxy with bench/txproxy_cache.py: gzip at the level, and a cache if C{cache}.
    """

    def launch(supervisor: Supervisor, port: int, origin: int, level: int) -> Process:
        twistd = Path(sys.executable).with_name("twistd")
        if not twistd.exists():
            raise StartFailed(f"txproxy is not installed for {sys.executable}: pip install .")
        config = str(BENCH / "txproxy_cache.py")
        env = {
            "TXPROXY_BENCH_LISTEN": f"tcp:{port}:interface=127.0.0.1",
            "TXPROXY_BENCH_ORIGIN": f"127.0.0.1:{origin}",
            "TXPROXY_BENCH_CACHE": "1" if cache else "0",
            "TXPROXY_BENCH_GZIP_LEVEL": str(level),
        }
        argv = [str(twistd), "-n", "--pidfile=", "txproxy", "--config", config]
        return supervisor.start(name, argv, env)

    return launch


ORIGIN = Target("origin", "nginx serving the bodies itself (no proxy)", launch_origin)
TARGETS = {
    target.name: target
    for target in (
        ORIGIN,
        Target(
            "nginx-cache",
            "nginx proxy_cache + proxy_cache_lock, gzip",
            nginx_launcher("nginx-cache", cache=True),
            ("X-Cache-Status", "HIT"),
        ),
        Target(
            "txproxy-cache",
            "txproxy Route(cache=Cache(), compression=Compression(gzip))",
            txproxy_launcher("txproxy-cache", cache=True),
            ("Cache-Status", "txproxy; hit"),
        ),
        Target("nginx-gzip", "nginx proxy_pass, gzip", nginx_launcher("nginx-gzip", cache=False)),
        Target(
            "txproxy-gzip",
            "txproxy Route(compression=Compression(gzip))",
            txproxy_launcher("txproxy-gzip", cache=False),
        ),
    )
}


@dataclass(frozen=True)
class Scenario:
    """
    One load: wrk keep-alive on one path with some request fields.

    @ivar targets: the targets loaded, the nginx the ratios divide by first.
    @ivar references: targets loaded too, shown without a ratio.
    """

    name: str
    path: str
    headers: tuple[str, ...]
    body: bytes
    targets: tuple[str, ...]
    references: tuple[str, ...] = ()

    @property
    def gzipped(self) -> bool:
        return "Accept-Encoding: gzip" in self.headers


SCENARIOS = (
    Scenario(
        "cache hits, 100 B",
        "/small",
        (),
        SMALL,
        ("nginx-cache", "txproxy-cache"),
        # What the machine does serving the file, and each proxy forwarding it uncached.
        references=("origin", "nginx-gzip", "txproxy-gzip"),
    ),
    Scenario(
        "gzip 64 KiB JSON, no cache",
        "/data.json",
        ("Accept-Encoding: gzip",),
        JSON,
        ("nginx-gzip", "txproxy-gzip"),
    ),
    Scenario(
        "gzip 64 KiB JSON, cached",
        "/data.json",
        ("Accept-Encoding: gzip",),
        JSON,
        ("nginx-cache", "txproxy-cache"),
    ),
)


@dataclass
class Result:
    """
    What one target did in one scenario, round after round.
    """

    runs: list[Measurement] = field(default_factory=list)
    failure: str | None = None
    compressed: int | None = None

    def median(self, name: str) -> float | None:
        values = [getattr(run, name) for run in self.runs if getattr(run, name) is not None]
        return statistics.median(values) if values else None


def check(target: Target, port: int, scenario: Scenario) -> int:
    """
    Ask a target twice as the scenario will: 200 and the body, gzipped where
    asked, and the second time from its cache where it has one.

    @return: the length of the body on the wire.
    @raise RunFailed: saying what it answered instead.
    """
    fields = dict(header.split(": ", 1) for header in scenario.headers)
    length = 0
    for attempt in (1, 2):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
        try:
            connection.request("GET", scenario.path, headers=fields)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise RunFailed(f"GET {scenario.path} failed: {error}") from None
        finally:
            connection.close()
        if response.status != 200:
            raise RunFailed(f"GET {scenario.path}: {response.status} {response.reason}")
        length = len(body)
        if scenario.gzipped:
            if response.getheader("Content-Encoding") != "gzip":
                raise RunFailed(f"GET {scenario.path} was not gzipped")
            body = gzip.decompress(body)
        if body != scenario.body:
            raise RunFailed(f"GET {scenario.path}: a body of {len(body)} bytes, not the origin's")
        if attempt == 2 and target.hit is not None:
            name, prefix = target.hit
            value = response.getheader(name) or ""
            if not value.startswith(prefix):
                raise RunFailed(f"GET {scenario.path} again: {name}: {value!r}, not a hit")
    return length


def run_wrk(
    supervisor: Supervisor, port: int, scenario: Scenario, settings: Settings
) -> Measurement:
    """
    Load a target with wrk, one thread, keep-alive, for the run's duration.

    @raise RunFailed: if wrk fails or completes no request.
    """
    url = f"http://127.0.0.1:{port}{scenario.path}"
    return load_with_wrk(supervisor, url, settings.duration, settings.connections, scenario.headers)


@dataclass(frozen=True)
class Settings:
    """
    How a run loads each target.
    """

    duration: int
    connections: int
    rounds: int
    level: int


def run(
    directory: Path, settings: Settings
) -> tuple[dict[tuple[str, str], Result], dict[str, str]]:
    """
    Start the origin and the proxies, then load them scenario by scenario, round by round.

    @return: the results by scenario and target name, and why targets that
        did not start were skipped.
    """
    results: dict[tuple[str, str], Result] = {}
    skipped: dict[str, str] = {}
    with Supervisor(directory) as supervisor:
        [origin_port] = free_ports(1)
        origin = launch_origin(supervisor, origin_port, origin_port, settings.level)
        supervisor.wait_until_listening(origin, origin_port, START_TIMEOUT)
        ports = {"origin": origin_port}
        processes = {"origin": origin}
        for name, target in TARGETS.items():
            if name == "origin":
                continue
            [port] = free_ports(1)
            try:
                process = target.launch(supervisor, port, origin_port, settings.level)
                supervisor.wait_until_listening(process, port, START_TIMEOUT)
            except StartFailed as failed:
                skipped[name] = failed.reason
                progress(f"{name}: skipped: {failed.reason}")
                continue
            ports[name], processes[name] = port, process
            progress(f"{name}: {target.description}: on 127.0.0.1:{port} (pid {process.pid})")
        for round_number in range(settings.rounds):
            for scenario in SCENARIOS:
                names = [*scenario.references, *scenario.targets]
                names = [name for name in names if name in ports]
                shift = round_number % max(len(names), 1)
                progress(f"{scenario.name}, round {round_number + 1} of {settings.rounds}")
                for name in [*names[shift:], *names[:shift]]:
                    result = results.setdefault((scenario.name, name), Result())
                    if result.failure is not None:
                        continue
                    load(
                        supervisor,
                        TARGETS[name],
                        ports[name],
                        processes[name],
                        scenario,
                        settings,
                        result,
                    )
    return results, skipped


def load(
    supervisor: Supervisor,
    target: Target,
    port: int,
    process: Process,
    scenario: Scenario,
    settings: Settings,
    result: Result,
) -> None:
    """
    Check a target, then load it with one scenario and record the run.
    """
    try:
        result.compressed = check(target, port, scenario)
        # Let a cache that stores after the response (nginx) finish storing.
        time.sleep(0.2)
        cpu = tree_cpu(process.pid)
        measured = run_wrk(supervisor, port, scenario, settings)
    except RunFailed as failed:
        result.failure = failed.reason
        progress(f"  {target.name}: {failed.reason}")
        return
    cpu = tree_cpu(process.pid) - cpu
    measured = Measurement(
        measured.requests_per_second,
        measured.p50,
        measured.p99,
        measured.errors,
        measured.requests,
        cpu / measured.requests * 1e6,
    )
    result.runs.append(measured)
    progress(
        f"  {target.name}: {measured.requests_per_second:,.0f} req/s, "
        f"p50 {measured.p50:.2f} ms, p99 {measured.p99:.2f} ms, "
        f"CPU {measured.cpu_per_request:,.0f} us/req"
        + (f", errors {measured.errors}" if measured.errors else "")
    )
    time.sleep(1.0)


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def report(
    results: dict[tuple[str, str], Result],
    skipped: dict[str, str],
    settings: Settings,
    command: str,
    started: datetime.datetime,
    machine_before: str,
) -> str:
    """
    The run's report, in markdown.
    """
    header = [
        "scenario",
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU µs/req",
        "bytes/resp",
        "req/s ÷ nginx",
        "CPU ÷ nginx",
        "errors",
    ]
    rows = []
    for scenario in SCENARIOS:
        base = results.get((scenario.name, scenario.targets[0]))
        base_rate = base.median("requests_per_second") if base else None
        base_cpu = base.median("cpu_per_request") if base else None
        for name in [*scenario.references, *scenario.targets]:
            result = results.get((scenario.name, name))
            if result is None:
                continue
            if result.failure is not None and not result.runs:
                rows.append([scenario.name, name, *["—"] * 7, f"failed: {result.failure}"])
                continue
            rate = result.median("requests_per_second")
            cpu = result.median("cpu_per_request")
            compared = name in scenario.targets
            errors = sum(sum(run.errors.values()) for run in result.runs)
            rows.append(
                [
                    scenario.name,
                    name,
                    _number(rate),
                    _number(result.median("p50"), 2),
                    _number(result.median("p99"), 2),
                    _number(cpu),
                    _number(result.compressed),
                    _number(rate / base_rate, 2) if compared and rate and base_rate else "—",
                    _number(cpu / base_cpu, 2) if compared and cpu and base_cpu else "—",
                    str(errors) if errors else "",
                ]
            )
    nginx = capture([find_tool("nginx") or "nginx", "-v"]).strip()
    commit = capture(["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"]).strip()
    lines = [
        f"## {started:%Y-%m-%d}: cache and compression (`{command}`)",
        "",
        f"- Started {started:%Y-%m-%d %H:%M} UTC on {machine_before}; txproxy {commit}, "
        f"{nginx}, Python {platform.python_version()}.",
        f"- wrk -t1 -c{settings.connections} keep-alive, {settings.duration} s a run, "
        f"{settings.rounds} round(s) (medians); gzip level {settings.level} on both sides.",
        "- bytes/resp: the body on the wire (gzipped where asked), as checked before the run.",
        "",
        *markdown_table(header, rows),
        "",
    ]
    for name, reason in skipped.items():
        lines.insert(-1, f"- {name} skipped: {reason}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print its report; return the exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python bench/cache.py",
        description="Benchmark txproxy's cache and compression beside nginx's.",
    )
    parser.add_argument("--duration", type=int, default=None, help="seconds per run (10)")
    parser.add_argument("--connections", type=int, default=50, help="wrk's connections (50)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; medians reported (1)")
    parser.add_argument("--level", type=int, default=6, help="gzip level on both sides (6)")
    parser.add_argument("--quick", action="store_true", help="2 s runs, to try the harness")
    arguments = parser.parse_args(argv)
    missing = [tool for tool in ("nginx", "wrk") if find_tool(tool) is None]
    if missing:
        progress(f"missing: {', '.join(missing)}; install with: sudo sh bench/setup.sh")
        return 2
    if not 1 <= arguments.level <= 9:
        parser.error("--level must be 1 to 9")
    settings = Settings(
        duration=arguments.duration or (2 if arguments.quick else 10),
        connections=arguments.connections,
        rounds=arguments.rounds,
        level=arguments.level,
    )
    command = " ".join(["python bench/cache.py", *argv])
    started = datetime.datetime.now(datetime.UTC)
    machine_before = machine()
    with tempfile.TemporaryDirectory(prefix="txproxy-bench-cache-") as temporary:
        directory = Path(temporary)
        # nginx's workers run as an unprivileged user when started by root.
        directory.chmod(0o755)
        try:
            results, skipped = run(directory, settings)
        except StartFailed as failed:
            progress(f"the origin did not start: {failed.reason}")
            return 1
        except (KeyboardInterrupt, subprocess.SubprocessError) as error:
            progress(f"interrupted: {error!r}")
            return 130
    print(report(results, skipped, settings, command, started, machine_before), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
