# -*- test-case-name: tests.test_endpoints -*-
"""
Client endpoints that reach the servers of a pool.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTCP,
    IStreamClientEndpoint,
)

from txproxy.pool import ServerState


def server_endpoint(
    reactor: IReactorTCP, server: ServerState, timeout: float
) -> IStreamClientEndpoint:
    """
    The endpoint that reaches C{server}, giving up after C{timeout} seconds.

    IP literals connect directly; names are resolved by the reactor each time,
    so a server that moves to a new address is followed.
    """
    host, port = server.host, server.port
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


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
