"""
The TLS scenarios' tools: full handshakes with openssl s_time, HTTP/2 with h2load.

wrk and h2load both resume their TLS session when they reconnect (wrk keeps
its SSL object across connections, h2load each client's), so neither makes
full handshakes after the first connection. C{openssl s_time -new} makes a
new SSL object for every connection, and so a full handshake every time: it
counts a resumed one with an C{r}, which the run reports as an error. It makes
one connection at a time, so several run side by side.

HTTP/2 is checked before h2load runs: a target that offers h2 by ALPN but
does not speak it fails the scenario with what it answered, rather than with
h2load's bare counts.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path

from measurements import Measurement, Scenario
from processes import Process, RunFailed, StartFailed, Supervisor
from targets import PROBE_TIMEOUT, TLSFiles, find_tool, probe_context

# h2load's clients (connections) and the streams each keeps open at once.
H2_CLIENTS = 10
H2_STREAMS = 10
# Seconds a run may take past its duration before its processes are killed.
GRACE = 30.0


def handshake_request(path: str, port: int) -> tuple[str, bytes]:
    """
    What s_time is given for C{-www}, and the request it then sends.

    s_time sends C{GET <page> HTTP/1.0} and nothing else: no Host, no
    keep-alive, and the server's close ends the connection. A proxy may
    forward that as an HTTP/1.1 request without Host, which the origin
    refuses (txproxy at ceee646 does); so the page carries the end of an HTTP/1.1 request
    line and the head that wrk's C{Connection: close} scenario sends, and the
    C{HTTP/1.0} s_time appends becomes the value of a header of its own.
    """
    page = f"{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nX-S-Time:"
    return page, f"GET {page} HTTP/1.0\r\n\r\n".encode("ascii")


def _fetch(port: int, request: bytes, context: ssl.SSLContext) -> bytes:
    """
    Send C{request} over a new TLS connection and read until the server closes it.

    @raise RunFailed: if the connection fails.
    """
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            connection.sendall(request)
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
    except (OSError, ssl.SSLError) as error:
        raise RunFailed(f"did not answer over TLS: {error}") from None
    return b"".join(chunks)


def run_s_time(
    supervisor: Supervisor,
    files: TLSFiles,
    port: int,
    scenario: Scenario,
    duration: int,
    clients: int,
) -> Measurement:
    """
    Make new TLS connections to a target, each a full handshake and one
    request, with C{clients} openssl s_time processes for C{duration} seconds.

    The same request is first made once from Python, and every response
    s_time reads must be as long as that one, which must be a 200: s_time
    itself looks at neither status nor body. s_time gives no latencies.

    @raise RunFailed: if s_time is missing or fails, or the target does not
        answer the request with a 200.
    """
    openssl = find_tool("openssl")
    if openssl is None:
        raise RunFailed("openssl is not installed: run bench/setup.sh")
    page, request = handshake_request(scenario.path, port)
    expected = _fetch(port, request, probe_context(files, alpn=()))
    status = expected.split(b"\r\n", 1)[0].decode("latin-1")
    if not re.match(r"HTTP/1\.[01] 200 ", status):
        raise RunFailed(f"answered s_time's request with {status!r}")
    argv = [openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(duration)]
    # No authorities: s_time does not verify, and without these it reads the
    # system's certificate directory on every connection.
    argv += ["-www", page, "-no-CAfile", "-no-CApath", "-no-CAstore"]
    started: list[float] = []
    processes: list[Process] = []
    ended: dict[int, float] = {}
    deadline = time.monotonic() + duration + 1 + GRACE
    try:
        for index in range(clients):
            processes.append(supervisor.start(f"s_time-{index}", argv))
            started.append(time.monotonic())
        while len(ended) < len(processes) and time.monotonic() < deadline:
            for index, process in enumerate(processes):
                if index not in ended and process.popen.poll() is not None:
                    ended[index] = time.monotonic()
            time.sleep(0.005)
    except StartFailed as failed:
        raise RunFailed(failed.reason) from None
    finally:
        for process in processes:
            supervisor.stop(process)
    connections = resumed = wrong = 0
    rate = 0.0
    for index, process in enumerate(processes):
        output = process.output()
        if index not in ended:
            raise RunFailed(f"s_time did not finish within {duration + 1 + GRACE:.0f} s")
        found = re.search(r"^(\d+) connections in [\d.]+s; .* bytes read (\d+)$", output, re.M)
        if process.popen.returncode != 0 or found is None:
            raise RunFailed(f"s_time exited with {process.popen.returncode}: {process.last_line()}")
        count, read = int(found.group(1)), int(found.group(2))
        connections += count
        rate += count / (ended[index] - started[index])
        # One character a connection: r if resumed, * (TLS 1.3 and 1.2) or t, 3 if not.
        resumed += sum(line.count("r") for line in re.findall(r"^[*rt3]+$", output, re.M))
        if read != count * len(expected):
            wrong += count
    errors = {"resumed": resumed, f"not {len(expected)} bytes": wrong}
    return Measurement(
        requests_per_second=rate,
        p50=None,
        p99=None,
        errors={name: count for name, count in errors.items() if count},
        requests=connections,
    )


def probe_h2(port: int, files: TLSFiles, path: str) -> None:
    """
    Check that a target speaks HTTP/2 after ALPN: one GET of C{path}, answered
    with a 200, over a connection offering only h2.

    @raise RunFailed: saying what the target did instead.
    """
    try:
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
    except ImportError:
        return
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [(":method", "GET"), (":path", path), (":scheme", "https")]
        + [(":authority", f"127.0.0.1:{port}")],
        end_stream=True,
    )
    status = None
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as raw,
            probe_context(files, alpn=("h2",)).wrap_socket(
                raw, server_hostname="127.0.0.1"
            ) as connection,
        ):
            chosen = connection.selected_alpn_protocol()
            if chosen != "h2":
                raise RunFailed(f"does not offer h2 by ALPN (it chose {chosen or 'nothing'})")
            connection.sendall(client.data_to_send())
            received = b""
            while True:
                data = connection.recv(65536)
                received += data
                if not data or received.startswith(b"HTTP/"):
                    # Not a frame: HTTP/1.1, to the connection preface.
                    first = received.split(b"\r\n", 1)[0][:60].decode("latin-1")
                    raise RunFailed(
                        f"negotiated h2 by ALPN, then answered HTTP/2 with {first!r}"
                        if first
                        else "negotiated h2 by ALPN, then closed the connection unanswered"
                    )
                try:
                    events = client.receive_data(data)
                except h2.exceptions.ProtocolError as error:
                    raise RunFailed(f"negotiated h2 by ALPN, then broke HTTP/2: {error}") from None
                for event in events:
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers).get(b":status")
                    elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        raise RunFailed(f"HTTP/2: {type(event).__name__} {event.error_code!r}")
                    elif isinstance(event, h2.events.StreamEnded):
                        if status != b"200":
                            raise RunFailed(f"answered GET {path} over HTTP/2 with {status!r}")
                        return
                connection.sendall(client.data_to_send())
    except (OSError, ssl.SSLError) as error:
        raise RunFailed(f"HTTP/2 probe failed: {error}") from None


def percentile(values: list[int], share: float) -> float:
    """
    The value below which C{share} of C{values} lie (nearest rank).
    """
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))])


def run_h2load(
    supervisor: Supervisor, files: TLSFiles, port: int, scenario: Scenario, duration: int
) -> Measurement:
    """
    Load a target with HTTP/2 requests from h2load, L{H2_CLIENTS} connections
    with L{H2_STREAMS} streams each, for C{duration} seconds; latencies come
    from its per-request log.

    @raise RunFailed: if h2load is missing or fails, the target does not
        speak HTTP/2, or no request succeeds.
    """
    h2load = find_tool("h2load")
    if h2load is None:
        raise RunFailed("h2load is not installed: run bench/setup.sh (nghttp2-client)")
    probe_h2(port, files, scenario.path)
    log = supervisor.directory / f"h2load-{port}.log"
    argv = [h2load, "-t1", f"-c{H2_CLIENTS}", f"-m{H2_STREAMS}", f"-D{duration}"]
    argv += ["--log-file", str(log), f"https://127.0.0.1:{port}{scenario.path}"]
    output = supervisor.run("h2load", argv, duration + GRACE)
    protocol = re.search(r"^Application protocol: (\S+)", output, re.M)
    if protocol is None or protocol.group(1) != "h2":
        chosen = protocol.group(1) if protocol else "nothing"
        raise RunFailed(f"h2load negotiated {chosen}, not h2")
    finished = re.search(r"^finished in ([\d.]+)s", output, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
        re.M,
    )
    statuses = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if finished is None or counts is None or statuses is None:
        raise RunFailed(f"h2load printed no result: {output.strip()[-200:]}")
    succeeded = int(statuses.group(1)) + int(statuses.group(2))
    if not succeeded:
        raise RunFailed(f"no request succeeded: {counts.group(0)}")
    latencies = _log_latencies(log)
    errors = {
        "failed": int(counts.group(5)),
        "errored": int(counts.group(6)),
        "timeout": int(counts.group(7)),
        "status": int(statuses.group(3)) + int(statuses.group(4)),
    }
    return Measurement(
        requests_per_second=succeeded / float(finished.group(1)),
        p50=percentile(latencies, 0.50) / 1000 if latencies else None,
        p99=percentile(latencies, 0.99) / 1000 if latencies else None,
        errors={name: count for name, count in errors.items() if count},
        requests=succeeded,
    )


def _log_latencies(log: Path) -> list[int]:
    """
    The microseconds each successful request took, from h2load's C{--log-file}
    (start time, status, microseconds to the end of the response).
    """
    latencies = []
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return []
    finally:
        log.unlink(missing_ok=True)
    for line in lines:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].isdigit() and 200 <= int(fields[1]) < 400:
            latencies.append(int(fields[2]))
    return latencies
