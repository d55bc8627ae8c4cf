"""
Tests for L{txproxy.tcp}: the relay, driven by a memory reactor and string transports.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txproxy.balancing import RoundRobin
from txproxy.pool import Pool, ServerState, ServerStatus
from txproxy.tcp import Relay, RelayFactory, UpstreamRelay, client_hash_key


class HalfCloseTransport(StringTransport):
    """
    A L{StringTransport} that records a half-close.
    """

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


class RelayTests(SynchronousTestCase):
    """
    Tests for L{Relay} and L{UpstreamRelay}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = Pool(
            "db",
            [ServerState("10.0.0.1:5432"), ServerState("10.0.0.2:5432")],
            RoundRobin(),
        )
        self.factory = RelayFactory(
            self.pool, self.reactor, connect_timeout=5.0, idle_timeout=60.0, retries=1
        )
        self.client = HalfCloseTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        self.relay = self.factory.buildProtocol(self.client.getPeer())
        assert isinstance(self.relay, Relay)
        self.relay.makeConnection(self.client)

    def accept(self, index: int = -1) -> tuple[UpstreamRelay, HalfCloseTransport]:
        """
        Let the upstream connection attempt number C{index} succeed.

        @return: the relay's server-side protocol and its transport.
        """
        host, port, factory, timeout, _ = self.reactor.tcpClients[index]
        transport = HalfCloseTransport()
        factory.buildProtocol(IPv4Address("TCP", host, port)).makeConnection(transport)
        assert isinstance(self.relay.peer, UpstreamRelay)
        return self.relay.peer, transport

    def refuse(self, index: int = -1) -> None:
        """
        Let the upstream connection attempt number C{index} be refused.
        """
        _, _, factory, _, _ = self.reactor.tcpClients[index]
        factory.clientConnectionFailed(
            self.reactor.connectors[index], Failure(ConnectionRefusedError())
        )

    def test_client_paused_until_connected(self) -> None:
        """
        The client is not read from until a server accepts; what arrives early
        is forwarded once it does.
        """
        self.assertEqual(self.client.producerState, "paused")
        self.relay.dataReceived(b"early")
        _, upstream = self.accept()
        self.assertEqual(upstream.value(), b"early")
        self.assertEqual(self.client.producerState, "producing")

    def test_connect_uses_pool_and_timeout(self) -> None:
        """
        The relay connects to the server the balancer picked, with the
        configured connect timeout, and counts it active.
        """
        [(host, port, _, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("10.0.0.1", 5432, 5.0))
        self.assertEqual(self.pool.server("10.0.0.1:5432").active, 1)

    def test_bytes_flow_both_ways(self) -> None:
        """
        Bytes from the client reach the server and bytes from the server reach
        the client.
        """
        protocol, upstream = self.accept()
        self.relay.dataReceived(b"ping")
        protocol.dataReceived(b"pong")
        self.assertEqual(upstream.value(), b"ping")
        self.assertEqual(self.client.value(), b"pong")

    def test_producers_registered_both_ways(self) -> None:
        """
        Each side's transport is the other's producer, so a full write buffer
        on one side pauses reading on the other.
        """
        _, upstream = self.accept()
        self.assertIs(self.client.producer, upstream)
        self.assertIs(upstream.producer, self.client)
        self.assertTrue(self.client.streaming)
        self.client.producer.pauseProducing()
        self.assertEqual(upstream.producerState, "paused")

    def test_refused_connect_tries_next_server(self) -> None:
        """
        A refused connect is counted against the server and the next server
        of the pool is tried.
        """
        self.refuse()
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.reactor.tcpClients[1][:2], ("10.0.0.2", 5432))
        first = self.pool.server("10.0.0.1:5432")
        self.assertEqual((first.active, first.fails, first.failures), (0, 1, 1))
        self.assertFalse(self.client.disconnecting)
        self.accept()
        self.assertEqual(self.pool.server("10.0.0.2:5432").active, 1)

    def test_client_closed_when_every_try_fails(self) -> None:
        """
        When the first try and every retry fail, the client connection is
        closed and no server is left counted active.
        """
        self.refuse(0)
        self.refuse(1)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertTrue(self.client.disconnecting)
        self.assertEqual([server.active for server in self.pool.servers], [0, 0])

    def test_no_available_server_closes_client(self) -> None:
        """
        With every server down, a new client is closed at once, with no connect.
        """
        for server in self.pool.servers:
            self.pool.mark_down(server.address)
        client = StringTransport()
        relay = self.factory.buildProtocol(None)
        relay.makeConnection(client)
        self.assertTrue(client.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 1)

    def test_client_leaving_cancels_connect(self) -> None:
        """
        A client that leaves while the server connect is pending cancels the
        connect and frees the server's slot.
        """
        self.relay.connectionLost(Failure(ConnectionRefusedError()))
        [connector] = self.reactor.connectors
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(self.pool.server("10.0.0.1:5432").active, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_half_close_passes_through(self) -> None:
        """
        When the client stops sending, the server's write side is closed; the
        relay goes on until the server stops sending too, then both close.
        """
        protocol, upstream = self.accept()
        self.relay.readConnectionLost()
        self.assertTrue(upstream.write_closed)
        self.assertFalse(upstream.disconnecting)
        protocol.dataReceived(b"late answer")
        self.assertEqual(self.client.value(), b"late answer")
        protocol.readConnectionLost()
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(upstream.disconnecting)

    def test_half_close_before_connect(self) -> None:
        """
        A client that half-closes before a server accepts has its bytes sent
        and then the server's write side closed.
        """
        self.relay.dataReceived(b"all of it")
        self.relay.readConnectionLost()
        _, upstream = self.accept()
        self.assertEqual(upstream.value(), b"all of it")
        self.assertTrue(upstream.write_closed)

    def test_idle_relay_closed(self) -> None:
        """
        A relay without traffic for C{idle_timeout} seconds closes both
        connections; traffic either way postpones that.
        """
        protocol, upstream = self.accept()
        self.reactor.advance(50)
        protocol.dataReceived(b"x")
        self.reactor.advance(50)
        self.assertFalse(self.client.disconnecting)
        self.reactor.advance(10)
        self.assertTrue(self.client.disconnecting)
        self.assertTrue(upstream.disconnecting)

    def test_upstream_loss_closes_client_and_releases(self) -> None:
        """
        When the server's connection is lost the client is closed and the
        server's active count drops, leaving no timer behind.
        """
        protocol, _ = self.accept()
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(self.client.disconnecting)
        self.assertEqual(self.pool.server("10.0.0.1:5432").active, 0)
        self.relay.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_draining_server_not_used(self) -> None:
        """
        A draining server is skipped for new connections.
        """
        self.pool.drain("10.0.0.2:5432")
        self.relay.connectionLost(Failure(ConnectionRefusedError()))
        relay = self.factory.buildProtocol(None)
        relay.makeConnection(StringTransport())
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("10.0.0.1", 5432))
        self.assertEqual(self.pool.server("10.0.0.2:5432").status, ServerStatus.DRAINING)


class ClientHashKeyTests(SynchronousTestCase):
    """
    Tests for L{client_hash_key}.
    """

    def test_ip_address(self) -> None:
        """
        The key of an IP client is its address, without the port.
        """
        self.assertEqual(client_hash_key(IPv4Address("TCP", "192.0.2.1", 1234)), b"192.0.2.1")

    def test_no_host(self) -> None:
        """
        A client address without a host has no key.
        """
        self.assertIsNone(client_hash_key(None))


class RelayQueueTests(SynchronousTestCase):
    """
    A relay waits in its pool's queue while every server is at its
    C{max_connections}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = Pool(
            "db",
            [ServerState("10.0.0.1:5432", max_connections=1)],
            RoundRobin(),
            queue_size=1,
            queue_timeout=10.0,
            clock=self.reactor,
        )
        self.factory = RelayFactory(
            self.pool, self.reactor, connect_timeout=5.0, idle_timeout=600.0, retries=0
        )

    def connect(self) -> tuple[Relay, HalfCloseTransport]:
        client = HalfCloseTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        relay = self.factory.buildProtocol(client.getPeer())
        assert isinstance(relay, Relay)
        relay.makeConnection(client)
        return relay, client

    def test_waits_for_a_slot(self) -> None:
        """
        The second relay connects once the first ends; a third, over the
        queue's size, is closed at once; a queued one that waits too long
        is closed.
        """
        first, _ = self.connect()
        self.assertEqual(len(self.reactor.tcpClients), 1)
        second, second_client = self.connect()
        self.assertEqual(self.pool.queued, 1)
        _, third_client = self.connect()
        self.assertTrue(third_client.disconnecting)
        self.assertFalse(second_client.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 1)

        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.pool.queued, 0)

        _, waiting_client = self.connect()
        self.assertEqual(self.pool.queued, 1)
        self.reactor.advance(10.0)
        self.assertTrue(waiting_client.disconnecting)
        self.assertEqual(self.pool.queued, 0)
