# -*- test-case-name: tests.test_endpoints -*-
"""
Client endpoints that reach the servers of a pool.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)

from txproxy.pool import ServerState


@lru_cache(maxsize=4096)
def _ip_version(host: str) -> int | None:
    """
    4 or 6 for an IP literal, L{None} for a name; remembered, since a
    connection per client asks it again for the same few servers.
    """
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def server_endpoint(
    reactor: IReactorTCP, server: ServerState, timeout: float
) -> IStreamClientEndpoint:
    """
    The endpoint that reaches C{server}, giving up after C{timeout} seconds.

    IP literals connect directly; names are resolved by the reactor each time,
    so a server that moves to a new address is followed. A server with TLS
    gets its connections wrapped in TLS, verified as its configuration says.
    """
    host, port = server.host, server.port
    version = _ip_version(host)
    endpoint: IStreamClientEndpoint
    if version is None:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    elif version == 6:
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)  # type: ignore[no-untyped-call]
    else:
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if server.tls is not None:
        endpoint = wrapClientTLS(server.tls, endpoint)
    return endpoint


def connect_upstream(
    reactor: IReactorTCP, server: ServerState, factory: IProtocolFactory, timeout: float
) -> Deferred[IProtocol]:
    """
    Open an upstream connection to C{server}.

    @return: a L{Deferred} firing with the connected protocol, or failing with
        the reason the server could not be reached; cancelling it abandons the
        attempt.
    """
    return server_endpoint(reactor, server, timeout).connect(factory)
