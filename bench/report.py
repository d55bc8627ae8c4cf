"""
The report of a benchmark run: markdown tables of the outcomes, ratios, and issue 4's goals.

The tables are padded so that the markdown reads as well in a terminal as pasted
into bench/RESULTS.md.
"""

from __future__ import annotations

import datetime
import importlib.machinery
import importlib.util
import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from measurements import SCENARIOS, Measurement, Outcome, Settings
from processes import capture
from targets import (
    LARGE_BODY,
    NGINX,
    NGINX_TLS,
    PORTFORWARD,
    REVERSE_PROXY,
    SMALL_BODY,
    find_tool,
)
from tls import H2_CLIENTS, H2_STREAMS


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """
    A markdown table with its columns padded to one width; numbers right-aligned.
    """
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    numeric = [
        all(re.fullmatch(r"[\d,.]+|—", row[index]) for row in rows) for index in range(len(header))
    ]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (width + 1) + ":" if right else "-" * (width + 2)
            for width, right in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return [line(header), rule, *(line(row) for row in rows)]


def _measured(outcomes: Sequence[Outcome], name: str, scenario: str) -> Measurement | None:
    """
    The measurement of target C{name} in C{scenario}, if one was made.
    """
    for outcome in outcomes:
        if outcome.target.name == name:
            measured = outcome.result(scenario)
            return measured if isinstance(measured, Measurement) else None
    return None


def _ratio(value: float | None, base: float | None) -> str:
    """
    C{value / base} to two places, or a dash when either is missing.
    """
    return "—" if value is None or not base else f"{value / base:.2f}"


def errors_in_words(errors: dict[str, int]) -> str:
    """
    wrk's error counts in words, such as C{12 read, 3 status}.
    """
    return ", ".join(f"{count} {name}" for name, count in errors.items())


def _milliseconds(value: float | None) -> str:
    """
    A latency to two places, or a dash when the tool gave none.
    """
    return "—" if value is None else f"{value:.2f}"


def results_table(
    outcomes: Sequence[Outcome], kinds: tuple[str, ...], base: str, cpu: bool = False
) -> list[str]:
    """
    The load table of the targets of C{kinds}: one row per scenario and target,
    with ratios to C{base}, for HTTP also to ReverseProxyResource, and with
    C{cpu} the target's CPU time per request and its ratio to C{base}'s.
    """
    http = "http" in kinds
    header = ["scenario", "target", "req/s", "p50 ms", "p99 ms"]
    if cpu:
        header.append("CPU µs/req")
    header += [f"req/s ÷ {base}", f"p99 ÷ {base}"]
    if cpu:
        header.append(f"CPU ÷ {base}")
    if http:
        header.append(f"req/s ÷ {REVERSE_PROXY}")
    header.append("errors")
    rows = []
    for scenario in SCENARIOS:
        if not set(scenario.kinds) & set(kinds):
            continue
        reference = _measured(outcomes, base, scenario.name)
        slow = _measured(outcomes, REVERSE_PROXY, scenario.name)
        for outcome in outcomes:
            target = outcome.target
            if target.kind not in kinds or outcome.skipped or not scenario.loads(target):
                continue
            names = [scenario.name, target.name]
            measured = outcome.result(scenario.name)
            if not isinstance(measured, Measurement):
                dashes = ["—"] * (len(header) - len(names) - 1)
                rows.append([*names, *dashes, measured or "not run"])
                continue
            rate, p99 = measured.requests_per_second, measured.p99
            row = [*names, f"{rate:,.0f}", _milliseconds(measured.p50), _milliseconds(p99)]
            if cpu:
                per_request = measured.cpu_per_request
                row.append("—" if per_request is None else f"{per_request:,.0f}")
            row.append(_ratio(rate, reference.requests_per_second if reference else None))
            row.append(_ratio(p99, reference.p99 if reference else None))
            if cpu:
                row.append(
                    _ratio(
                        measured.cpu_per_request, reference.cpu_per_request if reference else None
                    )
                )
            if http:
                proxied = target.kind == "http" and target.name != REVERSE_PROXY
                row.append(_ratio(rate, slow.requests_per_second if slow and proxied else None))
            row.append(errors_in_words(measured.errors))
            rows.append(row)
    return markdown_table(header, rows) if rows else []


def memory_table(outcomes: Sequence[Outcome], idle: int) -> list[str]:
    """
    The memory table: RSS of each target (with its children) when fresh, while
    holding C{idle} idle client connections, and after the load runs.
    """
    rows = []
    for outcome in outcomes:
        memory = outcome.memory
        if memory is None:
            continue
        per_connection = (memory.during - memory.before) / memory.held if memory.held else 0.0
        after = outcome.rss_after_load
        rows.append(
            [
                outcome.target.name,
                f"{memory.before / 1024:.1f}",
                f"{memory.during / 1024:.1f}",
                f"{memory.held}",
                f"{per_connection:.1f}",
                "—" if after is None else f"{after / 1024:.1f}",
            ]
        )
    header = ["target", "RSS MiB", f"RSS MiB, {idle} idle", "idle held"]
    header += ["KiB / idle connection", "RSS MiB after load"]
    return markdown_table(header, rows) if rows else []


@dataclass(frozen=True)
class Goal:
    """
    One of issue 4's targets: a bound on the ratio of a target's measurement to a base's.

    @ivar target: the target it is about.
    @ivar base: the target it is compared with.
    @ivar metric: C{"requests_per_second"} or C{"p99"}.
    @ivar bound: the ratio's bound.
    @ivar at_least: whether the ratio must be at least C{bound}, or at most.
    @ivar scenarios: the scenarios it applies to.
    """

    target: str
    base: str
    metric: str
    bound: float
    at_least: bool
    scenarios: tuple[str, ...]

    def __str__(self) -> str:
        """
        The goal in words, such as C{txproxy-tcp req/s ≥ 0.9 × twisted-portforward's}.
        """
        metric = "req/s" if self.metric == "requests_per_second" else self.metric
        sign = "≥" if self.at_least else "≤"
        return f"{self.target} {metric} {sign} {self.bound:g} × {self.base}'s"

    def holds(self, ratio: float) -> bool:
        """
        Whether a measured ratio meets the goal.
        """
        return ratio >= self.bound if self.at_least else ratio <= self.bound


KEEP_ALIVE = ("small keep-alive", "large keep-alive")
EVERY_SCENARIO = tuple(scenario.name for scenario in SCENARIOS if "http" in scenario.kinds)
GOALS = (
    Goal("txproxy-http", NGINX, "requests_per_second", 0.4, True, KEEP_ALIVE),
    Goal("txproxy-http", REVERSE_PROXY, "requests_per_second", 5, True, KEEP_ALIVE),
    Goal("txproxy-http", NGINX, "p99", 3, False, EVERY_SCENARIO),
    Goal("txproxy-tcp", PORTFORWARD, "requests_per_second", 0.9, True, EVERY_SCENARIO),
)


RSS_GOAL_MB = 60
"""
Issue 4's bound on txproxy-http's RSS with the idle connections held, in MB (10^6 bytes).
"""


def goal_checks(outcomes: Sequence[Outcome], idle: int) -> list[str]:
    """
    Issue 4's goals for the targets in the run, one line each: the ratio in
    each scenario and whether it holds.
    """
    lines = []
    run = {outcome.target.name for outcome in outcomes}
    for goal in GOALS:
        if goal.target not in run:
            continue
        results = []
        for scenario in goal.scenarios:
            measured = _measured(outcomes, goal.target, scenario)
            reference = _measured(outcomes, goal.base, scenario)
            if measured is None or reference is None:
                results.append(f"{scenario} not measured")
                continue
            ratio = getattr(measured, goal.metric) / getattr(reference, goal.metric)
            # Two places, or three where two would round onto the bound.
            shown = f"{ratio:.2f}" if round(ratio, 2) != goal.bound else f"{ratio:.3f}"
            results.append(f"{scenario} {shown} {'holds' if goal.holds(ratio) else 'MISSED'}")
        lines.append(f"- {goal}: {'; '.join(results)}")
    if "txproxy-http" not in run:
        return lines
    memory = next((o.memory for o in outcomes if o.target.name == "txproxy-http"), None)
    goal = f"txproxy-http RSS with {idle} idle connections < {RSS_GOAL_MB} MB"
    if memory is None:
        lines.append(f"- {goal}: not measured")
    else:
        megabytes = memory.during * 1024 / 1e6
        verdict = "holds" if megabytes < RSS_GOAL_MB else "MISSED"
        lines.append(f"- {goal}: {megabytes:.1f} MB {verdict}")
    return lines


def versions() -> str:
    """
    The versions of the programs measured, in one line.
    """
    found = []
    for tool, option, pattern, note in (
        ("nginx", "-v", r"nginx/(\S+)", ""),
        ("haproxy", "-v", r"version (\S+)", ""),
        ("wrk", "-v", r"wrk (\S+)", ""),
        ("h2load", "--version", r"nghttp2/(\S+)", ""),
        ("openssl", "version", r"OpenSSL (\S+)", " (s_time and s_server; the system's OpenSSL)"),
    ):
        path = find_tool(tool)
        match = re.search(pattern, capture([path, option])) if path else None
        found.append(f"{tool} {match.group(1) + note if match else 'not installed'}")
    try:
        from OpenSSL import SSL

        library = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
        found.append(f"pyOpenSSL {version('pyOpenSSL')} on {library} (txproxy, twisted-tls)")
    except ImportError:
        found.append("pyOpenSSL not installed")
    try:
        found.append(f"Twisted {version('Twisted')}")
    except PackageNotFoundError:
        found.append("Twisted not installed")
    found.append(f"{platform.python_implementation()} {platform.python_version()}")
    return ", ".join(found)


def txproxy_source() -> str:
    """
    Which txproxy the run measures: where the Python running this script (and
    so C{twistd}) imports it from and, in a git work tree, its commit.
    """
    spec = importlib.util.find_spec("txproxy")
    if spec is None or spec.origin is None:
        return "not installed"
    source = Path(spec.origin).resolve().parent.parent
    parsing = importlib.util.find_spec("txproxy.http.parsing")
    compiled = parsing is not None and (parsing.origin or "").endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )
    # setup.py compiles the sans-IO HTTP modules, except in an editable install.
    form = "its HTTP modules compiled by mypyc" if compiled else "plain Python"
    commit = capture(["git", "-C", str(source), "rev-parse", "--short", "HEAD"]).strip()
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return f"from {source} (not a git work tree), {form}"
    changes = capture(["git", "-C", str(source), "status", "--porcelain", "--", "."]).strip()
    state = " with uncommitted changes" if changes else ""
    return f"from {source}, commit {commit}{state}, {form}"


def machine() -> str:
    """
    The CPU count and model, and the load average, in a few words.
    """
    model = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = found.group(1) if found else model
    except OSError:
        pass
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({model}), load average {load:.2f}"


def tls_notes(outcomes: Sequence[Outcome], settings: Settings) -> list[str]:
    """
    What the TLS table's scenarios are, and what each TLS target negotiated.
    """
    negotiated = "; ".join(
        f"{outcome.target.name} {outcome.negotiated}" for outcome in outcomes if outcome.negotiated
    )
    return [
        f"- TLS new connections: `openssl s_time -new`, {settings.handshake_clients} processes "
        "side by side, each making one connection at a time: a full handshake (never resumed; "
        "an ECDSA P-256 certificate sent with its intermediate) and one `GET /small` with "
        "`Connection: close`. s_time gives no latencies.",
        f"- HTTPS keep-alive: wrk -t1 -c{settings.connections} over TLS, HTTP/1.1 (wrk offers "
        f"no ALPN). HTTP/2: h2load -t1 -c{H2_CLIENTS} -m{H2_STREAMS}, h2 by ALPN; latencies "
        "from its per-request log.",
        "- CPU µs/req: the CPU time (user and system) the target spent per request, with its "
        "children. Unlike req/s, it does not depend on how much of the machine the load tools "
        "take, which for full handshakes is most of it.",
        f"- Negotiated by the probe (Python's ssl, trusting only the run's root): {negotiated}."
        if negotiated
        else "- Negotiated by the probe: nothing (no TLS target answered).",
    ]


def report(
    outcomes: Sequence[Outcome],
    settings: Settings,
    command: str,
    started: datetime.datetime,
    machine_before: str,
    interrupted: bool = False,
) -> str:
    """
    The whole report, in markdown; with C{interrupted}, marked as partial.
    """
    rounds = f"Medians of {settings.rounds} rounds" if settings.rounds > 1 else "One round"
    lines = [
        f"## Run of {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{command}`" + (" (interrupted: partial results)" if interrupted else ""),
        "",
        f"- Load: wrk -t1 -c{settings.connections}, {settings.duration} s per run after a "
        f"{settings.warm_up} s warm-up; bodies of {SMALL_BODY} B (small) and "
        f"{LARGE_BODY // 1024} KiB (large); keep-alive, and `Connection: close` on each request. "
        f"{rounds}; each scenario runs on every target before the next scenario.",
        "- Machine: wrk uses one core; the origin, the proxy and wrk share "
        f"{os.cpu_count()} cores, and the machine is shared and noisy: compare ratios, "
        "not absolute numbers.",
        f"- Machine at start: {machine_before}; at end: {machine()}.",
        f"- Versions: {versions()}.",
        f"- txproxy: {txproxy_source()}.",
        "- Every target is one process with one worker, on 127.0.0.1, in front of one nginx "
        "origin (one worker, access log off).",
    ]
    http = results_table(outcomes, ("origin", "http"), NGINX)
    if http:
        lines += ["", f"### HTTP proxies (ratios to {NGINX}, and to {REVERSE_PROXY})", "", *http]
    tcp = results_table(outcomes, ("tcp",), PORTFORWARD)
    if tcp:
        lines += ["", f"### TCP relays, HTTP through them (ratios to {PORTFORWARD})", "", *tcp]
    tls = results_table(outcomes, ("tls",), NGINX_TLS, cpu=True)
    if tls:
        lines += [
            "",
            f"### TLS termination (ratios to {NGINX_TLS})",
            "",
            *tls_notes(outcomes, settings),
        ]
        lines += ["", *tls]
    memory = memory_table(outcomes, settings.idle)
    if memory:
        lines += ["", f"### Memory with {settings.idle} idle client connections", "", *memory]
    skipped = [outcome for outcome in outcomes if outcome.skipped]
    if skipped:
        lines += ["", "### Not measured", ""]
        lines += [f"- {outcome.target.name}: {outcome.skipped}" for outcome in skipped]
    goals = goal_checks(outcomes, settings.idle)
    if goals:
        lines += ["", "### Issue 4 goals", "", *goals]
    return "\n".join(lines) + "\n"
