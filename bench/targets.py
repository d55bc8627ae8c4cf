"""
The programs a benchmark run measures: how each is configured, started and checked.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from processes import Process, StartFailed, Supervisor, capture

BENCH = Path(__file__).resolve().parent
SMALL_BODY = 100
LARGE_BODY = 64 * 1024
TOOLS = ("nginx", "haproxy", "wrk")
# Debian puts nginx and haproxy in /usr/sbin, which a user's PATH may lack.
TOOL_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
PROBE_TIMEOUT = 5.0


def find_tool(name: str) -> str | None:
    """
    The path of an installed program, looking in the sbin directories too.
    """
    return shutil.which(name, path=TOOL_PATH)


def render(template: str, destination: Path, values: dict[str, str]) -> Path:
    """
    Write the template C{bench/conf/template} to C{destination}, each C{@NAME@}
    replaced by C{values[NAME]}.
    """
    text = (BENCH / "conf" / template).read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template}: no value for {', '.join(sorted(set(left)))}")
    destination.write_text(text)
    return destination


def nginx_stream_module() -> str | None:
    """
    What a configuration needs to use nginx's stream module: a C{load_module}
    line when the module is dynamic, an empty string when it is built in, or
    L{None} when this nginx has none.
    """
    nginx = find_tool("nginx")
    if nginx is None:
        return None
    build = capture([nginx, "-V"])
    if "--with-stream=dynamic" in build:
        found = re.search(r"--modules-path=(\S+)", build)
        module = Path(found.group(1) if found else "/usr/lib/nginx/modules")
        module = module / "ngx_stream_module.so"
        return f"load_module {module};" if module.exists() else None
    if re.search(r"--with-stream(\s|$)", build):
        return ""
    return None


Launcher = Callable[[Supervisor, int, int], Process]
"""
Starts a target: given the supervisor, its port and the origin's port.
"""


@dataclass(frozen=True)
class Target:
    """
    One program the benchmark measures.

    @ivar name: its name in the report and for C{--only}.
    @ivar kind: C{"origin"}, C{"http"} (a proxy compared with nginx) or
        C{"tcp"} (a relay compared with Twisted's portforward).
    @ivar description: what it is, for the report.
    @ivar launch: starts it.
    """

    name: str
    kind: str
    description: str
    launch: Launcher


def _target_directory(supervisor: Supervisor, name: str) -> Path:
    """
    A directory of its own for one target's files, under the run's directory.
    """
    directory = supervisor.directory / name
    directory.mkdir(mode=0o755, exist_ok=True)
    return directory


def nginx_launcher(name: str, template: str, stream: bool = False) -> Launcher:
    """
    Start nginx with the configuration made from C{template}; with C{stream},
    one that uses the stream module, which Debian ships as a package of its own.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        nginx = find_tool("nginx")
        if nginx is None:
            raise StartFailed("nginx is not installed: run bench/setup.sh")
        load_module = ""
        if stream:
            module = nginx_stream_module()
            if module is None:
                raise StartFailed("this nginx has no stream module (libnginx-mod-stream)")
            load_module = module
        directory = _target_directory(supervisor, name)
        values = {
            "DIR": str(directory),
            "LISTEN": str(port),
            "ORIGIN": str(origin),
            "LOAD_MODULE": load_module,
        }
        conf = render(template, directory / "nginx.conf", values)
        argv = [nginx, "-p", f"{directory}/", "-e", "stderr", "-c", str(conf)]
        return supervisor.start(name, argv)

    return launch


def origin_launcher(supervisor: Supervisor, port: int, origin: int) -> Process:
    """
    Start the origin: nginx serving the two bodies from files.
    """
    www = _target_directory(supervisor, "origin") / "www"
    www.mkdir(mode=0o755)
    (www / "small").write_bytes(b"s" * (SMALL_BODY - 1) + b"\n")
    (www / "large").write_bytes(b"l" * (LARGE_BODY - 1) + b"\n")
    return nginx_launcher("origin", "nginx-origin.conf")(supervisor, port, origin)


def haproxy_launcher(name: str, mode: str) -> Launcher:
    """
    Start HAProxy in C{mode}, C{"http"} or C{"tcp"}.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        haproxy = find_tool("haproxy")
        if haproxy is None:
            raise StartFailed("haproxy is not installed: run bench/setup.sh")
        directory = _target_directory(supervisor, name)
        values = {"MODE": mode, "LISTEN": str(port), "ORIGIN": str(origin)}
        conf = render("haproxy.cfg", directory / "haproxy.cfg", values)
        return supervisor.start(name, [haproxy, "-db", "-f", str(conf)])

    return launch


def script_launcher(name: str, script: str) -> Launcher:
    """
    Start one of the Twisted scripts in bench/, as C{script LISTEN_PORT ORIGIN_PORT}.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        if importlib.util.find_spec("twisted") is None:
            raise StartFailed(f"Twisted is not installed for {sys.executable}")
        argv = [sys.executable, str(BENCH / script), str(port), str(origin)]
        return supervisor.start(name, argv)

    return launch


def txproxy_launcher(name: str, config: str) -> Launcher:
    """
    Start txproxy with the configuration file C{bench/config}, under C{twistd -n}.

    The file reads the listening endpoint and the origin's address from the
    environment.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        twistd = Path(sys.executable).with_name("twistd")
        if importlib.util.find_spec("txproxy") is None or not twistd.exists():
            raise StartFailed(f"txproxy is not installed for {sys.executable}: pip install -e .")
        argv = [str(twistd), "-n", "--pidfile=", "txproxy", "--config", str(BENCH / config)]
        env = {
            "TXPROXY_BENCH_LISTEN": f"tcp:{port}:interface=127.0.0.1",
            "TXPROXY_BENCH_ORIGIN": f"127.0.0.1:{origin}",
        }
        return supervisor.start(name, argv, env)

    return launch


ORIGIN = Target("origin", "origin", "nginx serving the bodies itself (no proxy)", origin_launcher)
NGINX = "nginx"
PORTFORWARD = "twisted-portforward"
REVERSE_PROXY = "twisted-reverse-proxy"
TARGETS = (
    Target(
        NGINX,
        "http",
        "nginx proxy_pass, upstream keepalive 32",
        nginx_launcher(NGINX, "nginx-proxy.conf"),
    ),
    Target(
        "haproxy", "http", "HAProxy, mode http, nbthread 1", haproxy_launcher("haproxy", "http")
    ),
    Target(
        REVERSE_PROXY,
        "http",
        "twisted.web.proxy.ReverseProxyResource",
        script_launcher(REVERSE_PROXY, "twisted_reverse_proxy.py"),
    ),
    Target(
        "txproxy-http",
        "http",
        "txproxy HTTPListener (bench/txproxy_http.py)",
        txproxy_launcher("txproxy-http", "txproxy_http.py"),
    ),
    Target(
        PORTFORWARD,
        "tcp",
        "twisted.protocols.portforward",
        script_launcher(PORTFORWARD, "twisted_portforward.py"),
    ),
    Target(
        "txproxy-tcp",
        "tcp",
        "txproxy TCPListener (bench/txproxy_tcp.py)",
        txproxy_launcher("txproxy-tcp", "txproxy_tcp.py"),
    ),
    Target(
        "haproxy-tcp",
        "tcp",
        "HAProxy, mode tcp, nbthread 1",
        haproxy_launcher("haproxy-tcp", "tcp"),
    ),
    Target(
        "nginx-stream",
        "tcp",
        "nginx stream proxy_pass",
        nginx_launcher("nginx-stream", "nginx-stream.conf", stream=True),
    ),
)


def probe(port: int) -> None:
    """
    Check that a target on C{port} answers as the origin does: 200 with a
    body of the right size for both paths.

    @raise StartFailed: saying how it answered instead.
    """
    for path, size in (("/small", SMALL_BODY), ("/large", LARGE_BODY)):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            reason = str(error) or type(error).__name__
            raise StartFailed(f"did not answer GET {path}: {reason}") from None
        finally:
            connection.close()
        if response.status != 200 or len(body) != size:
            raise StartFailed(
                f"answered GET {path} with {response.status} {response.reason} "
                f"and {len(body)} bytes instead of 200 and {size}"
            )
