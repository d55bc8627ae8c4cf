# -*- test-case-name: tests.test_service -*-
"""
Build the runtime parts of a configuration: servers, pools, and what a listener needs.

Each function turns one configuration value into what runs it, reading the
files it names; none starts anything. L{txproxy.service} builds a running
proxy with them, and L{txproxy.reloading} what a reload adds.
"""

from __future__ import annotations

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime

from txproxy import config
from txproxy.balancing import balancer_for
from txproxy.http.accesslog import AccessLog
from txproxy.pool import Pool, ServerState
from txproxy.reload import Listener
from txproxy.tls import ALPN_HTTP, ServerTLS, upstream_tls


def build_server(server: config.Server) -> ServerState:
    """
    The runtime state of a configured server, up.

    @raise CertificateError: when a file of its upstream TLS cannot be used.
    """
    state = ServerState(
        server.address,
        weight=server.weight,
        backup=server.backup,
        max_connections=server.max_connections,
    )
    if server.tls is not None:
        state.tls = upstream_tls(server.tls, state.host)
    return state


def build_pool(pool: config.Pool, clock: IReactorTime | None = None) -> Pool:
    """
    The runtime state of a configured pool, every server up.

    @param clock: times its queue and slow start; needed when it has either.
    @raise CertificateError: when a file of a server's upstream TLS cannot be used.
    """
    return Pool(
        pool.name,
        [build_server(server) for server in pool.servers],
        balancer_for(pool.balancer),
        queue_size=pool.queue_size,
        queue_timeout=pool.queue_timeout,
        slow_start=pool.slow_start,
        clock=clock,
    )


def upstream_tls_for(server: config.Server) -> IOpenSSLClientConnectionCreator | None:
    """
    How to speak TLS to a configured server, or L{None} for plain TCP.

    @raise CertificateError: when a file cannot be used.
    """
    if server.tls is None:
        return None
    return upstream_tls(server.tls, server.address.rpartition(":")[0].strip("[]"))


def alpn_for(listener: Listener) -> tuple[bytes, ...]:
    """
    What a TLS listener offers by ALPN.
    """
    if isinstance(listener, config.HTTPListener):
        return ALPN_HTTP if listener.http2 else (b"http/1.1",)
    return ()


def server_tls_for(listener: Listener) -> ServerTLS | None:
    """
    The TLS a listener terminates, its files read, or L{None}.

    @raise CertificateError: when a file cannot be used.
    """
    return None if listener.tls is None else ServerTLS(listener.tls, alpn_for(listener))


def access_log_for(listener: Listener) -> AccessLog | None:
    """
    The access log of an HTTP listener, opened, or L{None}.

    @raise OSError: when its file cannot be opened.
    """
    if isinstance(listener, config.HTTPListener) and listener.access_log is not None:
        return AccessLog(listener.access_log.path, listener.access_log.format)
    return None


def summary_for(listener: Listener) -> str:
    """
    What a listener does, in a few words, for logs.
    """
    if isinstance(listener, config.TCPListener):
        summary = "TCP" if listener.pool is None else f"TCP to pool {listener.pool.name}"
        if listener.sni_routes:
            routes = ", ".join(
                f"{pattern} to {routed.name}" for pattern, routed in listener.sni_routes
            )
            summary = f"{summary}, TLS by server name: {routes}"
        return summary
    if listener.http_to_https is not None:
        return f"HTTP redirecting to HTTPS on port {listener.http_to_https}"
    pools = ", ".join(sorted({route.pool.name for route in listener.routes}))
    return f"{'HTTPS' if listener.tls else 'HTTP'} to pools {pools}"
