"""
Benchmark txproxy against nginx, HAProxy and Twisted's own proxies, in one run on one machine.

    python bench/run.py [--duration S] [--connections N] [--rounds N] [--only NAME] [--quick]

It starts one origin (nginx serving /small, 100 bytes, and /large, 64 KiB) and
each proxy in front of it, every one a single process with a single worker:
HTTP proxies (nginx, HAProxy, Twisted's ReverseProxyResource, txproxy's HTTP
listener) and TCP relays (Twisted's portforward, txproxy's TCP listener,
HAProxy in tcp mode, nginx stream). Each is measured fresh with idle client
connections held open, for its memory; then wrk loads one target at a time,
keep-alive and with C{Connection: close}, on both bodies. A target that does
not start or answer is skipped, with the reason in the report.

Everything runs on 127.0.0.1 on free ports, from a temporary directory, and
every process started is ended when the run ends, however it ends. The report
is a markdown document on standard output, to paste into bench/RESULTS.md;
progress goes to standard error.

This module runs the command; beside it, C{processes} starts and ends every
subprocess, C{targets} configures and starts each program measured,
C{measurements} drives wrk and reads memory, and C{report} writes the tables.
"""

from __future__ import annotations

import argparse
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
    Outcome,
    Scenario,
    Settings,
    measure_idle,
    run_wrk,
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
from targets import ORIGIN, TARGETS, TOOLS, Target, find_tool, probe  # noqa: E402

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

    @return: the running target, or L{None} if it failed to start or answer:
        it is then stopped, and C{outcome} says why it was skipped.
    """
    target = outcome.target
    [port] = free_ports(1)
    process: Process | None = None
    try:
        process = target.launch(supervisor, port, origin_port)
        supervisor.wait_until_listening(process, port, START_TIMEOUT)
        probe(port)
    except StartFailed as failed:
        outcome.skipped = failed.reason
        progress(f"{target.name}: skipped: {failed.reason}")
        if process is not None:
            supervisor.stop(process)
        return None
    outcome.memory = measure_idle(process.pid, port, settings.idle)
    progress(
        f"{target.name}: {target.description}: on 127.0.0.1:{port} (pid {process.pid}); "
        f"RSS {outcome.memory.before / 1024:.1f} MiB, "
        f"{outcome.memory.during / 1024:.1f} MiB while holding "
        f"{outcome.memory.held} idle connections"
    )
    return Running(outcome, process, port)


def load(supervisor: Supervisor, running: Running, scenario: Scenario, settings: Settings) -> None:
    """
    Load a running target with one scenario, and record how it went.
    """
    outcome, name = running.outcome, running.outcome.target.name
    if running.process.popen.poll() is not None:
        outcome.failures[scenario.name] = f"exited: {running.process.last_line()}"
        return
    try:
        measured = run_wrk(
            supervisor, running.port, scenario, settings.duration, settings.connections
        )
    except RunFailed as failed:
        outcome.failures[scenario.name] = failed.reason
        progress(f"  {name}: {failed.reason}")
        return
    outcome.runs.setdefault(scenario.name, []).append(measured)
    progress(
        f"  {name}: {measured.requests_per_second:,.0f} req/s, "
        f"p50 {measured.p50:.2f} ms, p99 {measured.p99:.2f} ms"
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
        try:
            run_wrk(supervisor, each.port, SCENARIOS[0], settings.warm_up, settings.connections)
        except RunFailed as failed:
            progress(f"  {each.outcome.target.name}: warm-up failed: {failed.reason}")


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
            if origin.popen.poll() is not None:
                progress(f"the origin exited ({origin.last_line()}): stopping the run")
                return
            progress(f"{scenario.name}, round {round_number + 1} of {settings.rounds}")
            for each in order:
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
    by kind (C{http}, which brings the origin as a reference, or C{tcp}).

    @raise SystemExit: for a name that is neither.
    """
    everything = [ORIGIN, *TARGETS]
    if not only:
        return everything
    names = {name for each in only for name in each.split(",") if name}
    known = {target.name for target in everything} | {"http", "tcp", "origin"}
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
        help="measure only this target, or kind (http, tcp); repeat or comma-separate. "
        "Ratios need their base (nginx, twisted-portforward) in the same run. Targets: "
        + ", ".join(target.name for target in [ORIGIN, *TARGETS]),
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each scenario this many times on each target and report medians (default 1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs (2 s, 1 s warm-up) to try the harness"
    )
    arguments = parser.parse_args(argv)
    for name in ("connections", "idle", "rounds"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name} must be at least 1")
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
    )
    needed = settings.idle * 3 + settings.connections * 4 + 256
    limit = raise_open_file_limit(max(OPEN_FILES, needed))
    if limit < needed:
        progress(f"warning: the open file limit is {limit}; the run needs about {needed}")
    targets = select_targets(arguments.only)
    command = " ".join(["python bench/run.py", *argv])
    started = datetime.datetime.now(datetime.UTC)
    machine_before = machine()
    # SIGTERM and SIGHUP end the run as Ctrl-C does: processes stopped, partial report.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    per_target = settings.rounds * len(SCENARIOS) * (settings.duration + 1) + settings.warm_up + 3
    progress(f"{command}: {len(targets)} target(s), about {len(targets) * per_target} s")
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
