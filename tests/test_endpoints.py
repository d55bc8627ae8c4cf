"""
Tests for L{txproxy.endpoints}.
"""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from txproxy.endpoints import server_endpoint
from txproxy.pool import ServerState


class ServerEndpointTests(SynchronousTestCase):
    """
    Tests for L{server_endpoint}.
    """

    def test_kinds(self) -> None:
        """
        IPv4 and IPv6 literals connect directly; names go through the resolver.
        """
        reactor = MemoryReactorClock()
        cases = [
            ("10.0.0.1:80", TCP4ClientEndpoint),
            ("[::1]:80", TCP6ClientEndpoint),
            ("db.internal:5432", HostnameEndpoint),
        ]
        for address, kind in cases:
            self.assertIsInstance(server_endpoint(reactor, ServerState(address), 1.0), kind)

    def test_timeout(self) -> None:
        """
        The connect timeout reaches the reactor's connect call.
        """
        reactor = MemoryReactorClock()
        server_endpoint(reactor, ServerState("10.0.0.1:80"), 2.5).connect(None)
        [(host, port, _, timeout, _)] = reactor.tcpClients
        self.assertEqual((host, port, timeout), ("10.0.0.1", 80, 2.5))
