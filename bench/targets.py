"""
The programs a benchmark run measures: how each is configured, started and checked.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import shutil
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from processes import Process, StartFailed, Supervisor, capture

BENCH = Path(__file__).resolve().parent
SMALL_BODY = 100
LARGE_BODY = 64 * 1024
TOOLS = ("nginx", "haproxy", "wrk")
# Needed only by the TLS scenarios (bench/tls.py); without them those are reported as failed.
TLS_TOOLS = ("openssl", "h2load")
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


@dataclass(frozen=True)
class TLSFiles:
    """
    The run's certificate, made by L{tls_files}.

    @ivar certificate: the PEM file of the private key, the certificate and
        the intermediate that issued it, which every TLS target serves.
    @ivar authority: the PEM file of the root that issued the intermediate,
        which the probes trust.
    @ivar chain: the PEM file of the intermediate alone, for openssl s_server.
    """

    certificate: Path
    authority: Path
    chain: Path


def tls_files(directory: Path) -> TLSFiles:
    """
    The run's certificate under C{directory}, made on first use with trustme:
    an ECDSA P-256 key, as most sites serve, with a certificate for 127.0.0.1
    and localhost issued by an intermediate under a root, so that a server
    sends a chain of two, as a site with a public certificate does.

    @raise StartFailed: if trustme is not installed.
    """
    tls = directory / "tls"
    files = TLSFiles(tls / "site.pem", tls / "root.pem", tls / "chain.pem")
    if files.certificate.exists():
        return files
    try:
        import trustme
    except ImportError:
        raise StartFailed(
            f"trustme is not installed for {sys.executable}: pip install '.[test]'"
        ) from None
    root = trustme.CA(key_type=trustme.KeyType.ECDSA)
    intermediate = root.create_child_ca(key_type=trustme.KeyType.ECDSA)
    leaf = intermediate.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA)
    files.certificate.parent.mkdir(mode=0o755, exist_ok=True)
    root.cert_pem.write_to_path(str(files.authority))
    intermediate.cert_pem.write_to_path(str(files.chain))
    # nginx's workers run as an unprivileged user when started by root.
    files.certificate.touch(mode=0o644)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(files.certificate))
    return files


Launcher = Callable[[Supervisor, int, int], Process]
"""
Starts a target: given the supervisor, its port and the origin's port.
"""


@dataclass(frozen=True)
class Target:
    """
    One program the benchmark measures.

    @ivar name: its name in the report and for C{--only}.
    @ivar kind: C{"origin"}, C{"http"} (a proxy compared with nginx),
        C{"tcp"} (a relay compared with Twisted's portforward) or C{"tls"}
        (TLS terminated in front of the origin, compared with nginx's).
    @ivar description: what it is, for the report.
    @ivar launch: starts it.
    @ivar tools: the load tools its scenarios may use: a TLS reference
        that speaks no HTTP/2 or no keep-alive is loaded by fewer.
    """

    name: str
    kind: str
    description: str
    launch: Launcher
    tools: tuple[str, ...] = ("wrk", "s_time", "h2load")


def _target_directory(supervisor: Supervisor, name: str) -> Path:
    """
    A directory of its own for one target's files, under the run's directory.
    """
    directory = supervisor.directory / name
    directory.mkdir(mode=0o755, exist_ok=True)
    return directory


def nginx_launcher(name: str, template: str, stream: bool = False, tls: bool = False) -> Launcher:
    """
    Start nginx with the configuration made from C{template}; with C{stream},
    one that uses the stream module, which Debian ships as a package of its
    own; with C{tls}, one that serves the run's certificate.
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
        if tls:
            values["CERTIFICATE"] = str(tls_files(supervisor.directory).certificate)
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


def haproxy_launcher(
    name: str, mode: str, template: str = "haproxy.cfg", tls: bool = False
) -> Launcher:
    """
    Start HAProxy in C{mode}, C{"http"} or C{"tcp"}, with the configuration
    made from C{template}; with C{tls}, one that serves the run's certificate.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        haproxy = find_tool("haproxy")
        if haproxy is None:
            raise StartFailed("haproxy is not installed: run bench/setup.sh")
        directory = _target_directory(supervisor, name)
        values = {"MODE": mode, "LISTEN": str(port), "ORIGIN": str(origin)}
        if tls:
            values["CERTIFICATE"] = str(tls_files(supervisor.directory).certificate)
        conf = render(template, directory / "haproxy.cfg", values)
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


def tls_script_launcher(name: str, script: str) -> Launcher:
    """
    Start one of the Twisted TLS scripts in bench/, as C{script LISTEN_PORT CERTIFICATE}.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        if importlib.util.find_spec("txproxy") is None:
            raise StartFailed(f"txproxy is not installed for {sys.executable}: pip install .")
        certificate = tls_files(supervisor.directory).certificate
        argv = [sys.executable, str(BENCH / script), str(port), str(certificate)]
        return supervisor.start(name, argv)

    return launch


def s_server_launcher(supervisor: Supervisor, port: int, origin: int) -> Process:
    """
    Start C{openssl s_server}, serving the origin's files itself with the
    run's certificate, its intermediate and the groups the others offer.

    It handles one connection at a time and closes each after one response
    (C{-WWW}), so it only takes new connections: what the system's OpenSSL
    costs a connection, with nothing around it but s_server's own loop.
    """
    openssl = find_tool("openssl")
    if openssl is None:
        raise StartFailed("openssl is not installed: run bench/setup.sh")
    files = tls_files(supervisor.directory)
    argv = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-WWW", "-quiet"]
    argv += ["-cert", str(files.certificate), "-key", str(files.certificate)]
    argv += ["-cert_chain", str(files.chain), "-groups", "X25519:P-256"]
    argv += ["-no-CAfile", "-no-CApath", "-no-CAstore"]
    www = _target_directory(supervisor, "origin") / "www"
    return supervisor.start(S_SERVER, argv, cwd=www)


def txproxy_launcher(name: str, config: str, tls: bool = False) -> Launcher:
    """
    Start txproxy with the configuration file C{bench/config}, under C{twistd -n}.

    The file reads the listening endpoint and the origin's address from the
    environment; with C{tls}, also the run's certificate.
    """

    def launch(supervisor: Supervisor, port: int, origin: int) -> Process:
        twistd = Path(sys.executable).with_name("twistd")
        if importlib.util.find_spec("txproxy") is None or not twistd.exists():
            raise StartFailed(f"txproxy is not installed for {sys.executable}: pip install .")
        argv = [str(twistd), "-n", "--pidfile=", "txproxy", "--config", str(BENCH / config)]
        env = {
            "TXPROXY_BENCH_LISTEN": f"tcp:{port}:interface=127.0.0.1",
            "TXPROXY_BENCH_ORIGIN": f"127.0.0.1:{origin}",
        }
        if tls:
            env["TXPROXY_BENCH_CERTIFICATE"] = str(tls_files(supervisor.directory).certificate)
        return supervisor.start(name, argv, env)

    return launch


ORIGIN = Target("origin", "origin", "nginx serving the bodies itself (no proxy)", origin_launcher)
NGINX = "nginx"
NGINX_TLS = "nginx-tls"
PORTFORWARD = "twisted-portforward"
REVERSE_PROXY = "twisted-reverse-proxy"
TWISTED_TLS = "twisted-tls"
S_SERVER = "openssl-s-server"
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
    Target(
        NGINX_TLS,
        "tls",
        "nginx ssl + http2, proxy_pass, upstream keepalive 32",
        nginx_launcher(NGINX_TLS, "nginx-tls.conf", tls=True),
    ),
    Target(
        "haproxy-tls",
        "tls",
        "HAProxy, bind ssl alpn h2,http/1.1, mode http, nbthread 1",
        haproxy_launcher("haproxy-tls", "http", "haproxy-tls.cfg", tls=True),
    ),
    Target(
        "txproxy-https",
        "tls",
        "txproxy HTTPListener with TLS (bench/txproxy_https.py)",
        txproxy_launcher("txproxy-https", "txproxy_https.py", tls=True),
    ),
    Target(
        TWISTED_TLS,
        "tls",
        "Twisted TLS with txproxy's context, answering itself, no proxy (twisted_tls.py)",
        tls_script_launcher(TWISTED_TLS, "twisted_tls.py"),
        tools=("wrk", "s_time"),
    ),
    Target(
        S_SERVER,
        "tls",
        "openssl s_server -WWW: OpenSSL alone, one connection at a time, no proxy",
        s_server_launcher,
        tools=("s_time",),
    ),
)


def probe(port: int, context: ssl.SSLContext | None = None) -> str | None:
    """
    Check that a target on C{port} answers as the origin does: 200 with a
    body of the right size for both paths; over TLS with C{context}.

    @return: over TLS, the protocol version and cipher negotiated, such as
        C{TLSv1.3 TLS_AES_256_GCM_SHA384}; else L{None}.
    @raise StartFailed: saying how it answered instead.
    """
    negotiated = None
    for path, size in (("/small", SMALL_BODY), ("/large", LARGE_BODY)):
        connection = (
            http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
            if context is None
            else http.client.HTTPSConnection(
                "127.0.0.1", port, timeout=PROBE_TIMEOUT, context=context
            )
        )
        try:
            connection.request("GET", path)
            if isinstance(connection.sock, ssl.SSLSocket):
                cipher = connection.sock.cipher()
                negotiated = f"{connection.sock.version()} {cipher[0] if cipher else ''}".strip()
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
    return negotiated


def probe_context(files: TLSFiles, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """
    A client context that trusts only the run's root, verifies the name, and
    offers C{alpn}: a target passes the probe only if it sends its chain.
    """
    context = ssl.create_default_context(cafile=str(files.authority))
    context.set_alpn_protocols(list(alpn))
    return context
