"""
Benchmark txproxy against nginx, HAProxy and Twisted's own proxies, in one run on one machine.

    python bench/run.py [--duration S] [--connections N] [--rounds N] [--only NAME] [--quick]

It starts one origin (nginx serving /small, 100 bytes, and /large, 64 KiB) and
each proxy in front of it, every one a single process with a single worker:
HTTP proxies (nginx, HAProxy, Twisted's ReverseProxyResource, txproxy's HTTP
listener), TCP relays (Twisted's portforward, txproxy's TCP listener,
HAProxy in tcp mode, nginx stream) and TLS terminators (nginx, HAProxy and
txproxy with TLS, and a bare Twisted TLS server). Each plain one is measured
fresh with idle client connections held open, for its memory; then wrk
loads one target at a time, keep-alive and with C{Connection: close}, on
both bodies; the TLS ones get new connections with full handshakes (openssl
s_time), HTTPS keep-alive (wrk) and HTTP/2 (h2load). A target that does not
start or answer is skipped, and a scenario that fails is reported as such,
with the reason in the report.

Everything runs on 127.0.0.1 on free ports, from a temporary directory, and
every process started is ended when the run ends, however it ends. The report
is a markdown document on standard output, to paste into bench/RESULTS.md;
progress goes to standard error.

This module runs the command; beside it, C{processes} starts and ends every
subprocess, C{targets} configures and starts each program measured,
C{measurements} drives wrk and reads memory and CPU time, C{tls} drives
s_time and h2load, and C{report} writes the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Set before the modules beside this one are imported: a run writes nothing
# into the repository, not even their bytecode.
sys.dont_write_bytecode = True

from measurements import (  # noqa: E402
    SCENARIOS,
    Measurement,
    Outcome,
    Scenario,
    Settings,
    measure_idle,
    run_wrk,
    tree_cpu,
    tree_rss,
)
from processes import (  # noqa: E402
    START_TIMEOUT,
    Process,
    RunFailed,
    StartFailed,
    Supervisor,
    free_ports,
)
from report import errors_in_words, machine, report  # noqa: E402
from targets import (  # noqa: E402
    ORIGIN,
    TARGETS,
    TLS_TOOLS,
    TOOLS,
    Target,
    find_tool,
    probe,
    probe_context,
    tls_files,
)
from tls import run_h2load, run_s_time  # noqa: E402

# Room for the idle connections, wrk's, and those each process relays.
OPEN_FILES = 16384


@dataclass(frozen=True)
class Running:
    """
    A target that started and answered, and is waiting for its load.

    @ivar outcome: where its measurements go.
    @ivar process: its process.
    @ivar port: its port on 127.0.0.1.
    """

    outcome: Outcome
    process: Process
    port: int


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """
    Say what the run is doing, on standard error, with the seconds since it started.
    """
    print(f"[{time.monotonic() - _STARTED:4.0f} s] {message}", file=sys.stderr, flush=True)


def start_target(
    supervisor: Supervisor, outcome: Outcome, origin_port: int, settings: Settings
) -> Running | None:
    """
    Start a target in front of the origin and, once it answers, measure its
    memory with idle connections while it is fresh.

    A TLS target is probed over TLS, trusting only the run's root, and its
    memory is not measured: its programs' is, as HTTP targets, and idle TCP
    connections that never start a handshake would say nothing more.

    @return: the running target, or L{None} if it failed to start or answer:
        it is then stopped, and C{outcome} says why it was skipped.
    """
    target = outcome.target
    [port] = free_ports(1)
    process: Process | None = None
    try:
        process = target.launch(supervisor, port, origin_port)
        supervisor.wait_until_listening(process, port, START_TIMEOUT)
        context = None
        if target.kind == "tls":
            context = probe_context(tls_files(supervisor.directory))
        outcome.negotiated = probe(port, context)
    except StartFailed as failed:
        outcome.skipped = failed.reason
        progress(f"{target.name}: skipped: {failed.reason}")
        if process is not None:
            supervisor.stop(process)
        return None
    started = f"{target.name}: {target.description}: on 127.0.0.1:{port} (pid {process.pid})"
    if target.kind == "tls":
        progress(f"{started}; {outcome.negotiated}")
        return Running(outcome, process, port)
    outcome.memory = measure_idle(process.pid, port, settings.idle)
    progress(
        f"{started}; RSS {outcome.memory.before / 1024:.1f} MiB, "
        f"{outcome.memory.during / 1024:.1f} MiB while holding "
        f"{outcome.memory.held} idle connections"
    )
    return Running(outcome, process, port)


def run_scenario(
    supervisor: Supervisor, running: Running, scenario: Scenario, duration: int, settings: Settings
) -> Measurement:
    """
    Load a running target with one scenario's tool for C{duration} seconds.

    @raise RunFailed: if the tool gives no measurement.
    """
    port = running.port
    if scenario.tool == "s_time":
        files = tls_files(supervisor.directory)
        return run_s_time(supervisor, files, port, scenario, duration, settings.handshake_clients)
    if scenario.tool == "h2load":
        return run_h2load(supervisor, tls_files(supervisor.directory), port, scenario, duration)
    scheme = "https" if running.outcome.target.kind == "tls" else "http"
    return run_wrk(supervisor, port, scenario, duration, settings.connections, scheme)


def load(supervisor: Supervisor, running: Running, scenario: Scenario, settings: Settings) -> None:
    """
    Load a running target with one scenario, and record how it went, with
    the CPU time the target spent per request.
    """
    outcome, name = running.outcome, running.outcome.target.name
    if running.process.popen.poll() is not None:
        outcome.failures[scenario.name] = f"exited: {running.process.last_line()}"
        return
    cpu = tree_cpu(running.process.pid)
    try:
        measured = run_scenario(supervisor, running, scenario, settings.duration, settings)
    except RunFailed as failed:
        outcome.failures[scenario.name] = failed.reason
        progress(f"  {name}: {failed.reason}")
        return
    cpu = tree_cpu(running.process.pid) - cpu
    if measured.requests:
        measured = dataclasses.replace(measured, cpu_per_request=cpu / measured.requests * 1e6)
    outcome.runs.setdefault(scenario.name, []).append(measured)
    latency = ""
    if measured.p50 is not None and measured.p99 is not None:
        latency = f", p50 {measured.p50:.2f} ms, p99 {measured.p99:.2f} ms"
    progress(
        f"  {name}: {measured.requests_per_second:,.0f} req/s{latency}"
        + (f", CPU {measured.cpu_per_request:,.0f} us/req" if measured.cpu_per_request else "")
        + (f", errors: {errors_in_words(measured.errors)}" if measured.errors else "")
    )
    # Let the connections of one run close before the next starts.
    time.sleep(1.0)


def warm_up(supervisor: Supervisor, running: Sequence[Running], settings: Settings) -> None:
    """
    Load each running target once, unmeasured: imports, caches and pools settle.
    """
    progress(f"warming up each target for {settings.warm_up} s")
    for each in running:
        target = each.outcome.target
        scenario = next((s for s in SCENARIOS if s.tool == "wrk" and s.loads(target)), None)
        if scenario is None:
            continue
        try:
            run_scenario(supervisor, each, scenario, settings.warm_up, settings)
        except RunFailed as failed:
            progress(f"  {target.name}: warm-up failed: {failed.reason}")


def load_rounds(
    supervisor: Supervisor, origin: Process, running: Sequence[Running], settings: Settings
) -> None:
    """
    Load the running targets, scenario by scenario, round by round.

    Each scenario runs on every target before the next scenario starts, and
    the order of the targets rotates from round to round, so that the numbers
    a ratio compares are taken close together in time on a shared machine.
    It stops early if the origin exits.
    """
    for round_number in range(settings.rounds):
        shift = round_number % max(len(running), 1)
        order = [*running[shift:], *running[:shift]]
        for scenario in SCENARIOS:
            loaded = [each for each in order if scenario.loads(each.outcome.target)]
            if not loaded:
                continue
            if origin.popen.poll() is not None:
                progress(f"the origin exited ({origin.last_line()}): stopping the run")
                return
            progress(f"{scenario.name}, round {round_number + 1} of {settings.rounds}")
            for each in loaded:
                load(supervisor, each, scenario, settings)


def run_all(
    directory: Path, targets: Sequence[Target], settings: Settings
) -> tuple[list[Outcome], bool]:
    """
    Start the origin and every target in front of it, then load them in turn.

    On Ctrl-C (or SIGTERM) the outcomes so far are returned; every process is
    ended either way.

    @return: the outcomes, and whether the run was interrupted.
    @raise StartFailed: if the origin does not start.
    """
    outcomes: list[Outcome] = []
    interrupted = False
    with Supervisor(directory) as supervisor:
        [origin_port] = free_ports(1)
        origin = ORIGIN.launch(supervisor, origin_port, origin_port)
        supervisor.wait_until_listening(origin, origin_port, START_TIMEOUT)
        probe(origin_port)
        progress(f"origin: {ORIGIN.description}: on 127.0.0.1:{origin_port} (pid {origin.pid})")
        try:
            running: list[Running] = []
            for target in targets:
                outcome = Outcome(target)
                outcomes.append(outcome)
                if target.kind == "origin":
                    running.append(Running(outcome, origin, origin_port))
                    continue
                started = start_target(supervisor, outcome, origin_port, settings)
                if started is not None:
                    running.append(started)
            warm_up(supervisor, running, settings)
            load_rounds(supervisor, origin, running, settings)
            for each in running:
                if each.process is not origin and each.process.popen.poll() is None:
                    each.outcome.rss_after_load = tree_rss(each.process.pid)
        except KeyboardInterrupt:
            progress("interrupted: reporting what was measured")
            interrupted = True
    return outcomes, interrupted


def raise_open_file_limit(wanted: int) -> int:
    """
    Raise this process's open file limit, which its children inherit, toward C{wanted}.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def select_targets(only: Sequence[str] | None) -> list[Target]:
    """
    The targets to measure, in order: all, or those C{--only} names by name or
    by kind (C{http}, which brings the origin as a reference, C{tcp} or C{tls}).

    @raise SystemExit: for a name that is neither.
    """
    everything = [ORIGIN, *TARGETS]
    if not only:
        return everything
    names = {name for each in only for name in each.split(",") if name}
    known = {target.name for target in everything} | {"http", "tcp", "tls", "origin"}
    unknown = names - known
    if unknown:
        raise SystemExit(
            f"unknown target {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    if "http" in names:
        names.add(ORIGIN.name)
    return [target for target in everything if target.name in names or target.kind in names]


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark txproxy against nginx, HAProxy and Twisted's proxies.",
    )
    parser.add_argument(
        "--duration", type=int, default=None, help="seconds per wrk run (default 10, --quick 2)"
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="wrk's connections (default 50)"
    )
    parser.add_argument(
        "--idle", type=int, default=1000, help="idle connections for the memory test (1000)"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="measure only this target, or kind (http, tcp, tls); repeat or comma-separate. "
        "Ratios need their base (nginx, twisted-portforward, nginx-tls) in the same run. Targets: "
        + ", ".join(target.name for target in [ORIGIN, *TARGETS]),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each scenario this many times on each target and report medians (default 1)",
    )
    parser.add_argument(
        "--handshake-clients",
        type=int,
        default=32,
        help="openssl s_time processes making new TLS connections side by side (default 32)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (2 s, 1 s warm-up) to try the harness"
    )
    arguments = parser.parse_args(argv)
    for name in ("connections", "idle", "rounds", "handshake_clients"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if arguments.duration is not None and arguments.duration < 1:
        parser.error("--duration must be at least 1")
    return arguments


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print its report; return the exit status.
    """
    arguments = parse_arguments(argv)
    missing = [tool for tool in TOOLS if find_tool(tool) is None]
    if missing:
        progress(f"missing: {', '.join(missing)}; install with: sudo sh bench/setup.sh")
        return 2
    settings = Settings(
        duration=arguments.duration or (2 if arguments.quick else 10),
        warm_up=1 if arguments.quick else 2,
        connections=arguments.connections,
        idle=arguments.idle,
        rounds=arguments.rounds,
        handshake_clients=arguments.handshake_clients,
    )
    needed = settings.idle * 3 + settings.connections * 4 + 256
    limit = raise_open_file_limit(max(OPEN_FILES, needed))
    if limit < needed:
        progress(f"warning: the open file limit is {limit}; the run needs about {needed}")
    targets = select_targets(arguments.only)
    missing = [tool for tool in TLS_TOOLS if find_tool(tool) is None]
    if missing and any(target.kind == "tls" for target in targets):
        progress(f"missing: {', '.join(missing)}, which TLS scenarios need: run bench/setup.sh")
    command = " ".join(["python bench/run.py", *argv])
    started = datetime.datetime.now(datetime.UTC)
    machine_before = machine()
    # SIGTERM and SIGHUP end the run as Ctrl-C does: processes stopped, partial report.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    runs = sum(1 for target in targets for scenario in SCENARIOS if scenario.loads(target))
    seconds = settings.rounds * runs * (settings.duration + 1.5) + len(targets) * (
        settings.warm_up + 3
    )
    progress(f"{command}: {len(targets)} target(s), about {seconds:.0f} s")
    with tempfile.TemporaryDirectory(prefix="txproxy-bench-") as temporary:
        directory = Path(temporary)
        # nginx's workers run as an unprivileged user when started by root:
        # they must be able to read the origin's files.
        directory.chmod(0o755)
        try:
            outcomes, interrupted = run_all(directory, targets, settings)
        except StartFailed as failed:
            progress(f"the origin did not start: {failed.reason}")
            return 1
        except KeyboardInterrupt:
            progress("interrupted")
            return 130
    print(report(outcomes, settings, command, started, machine_before, interrupted), end="")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
