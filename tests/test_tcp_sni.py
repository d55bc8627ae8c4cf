# -*- test-case-name: tests.test_tcp_sni -*-
"""
Tests for TLS passthrough by SNI: L{txproxy.tcp.SNIRelay} driven by a memory
reactor, then TCP listeners with SNI routes over real loopback sockets, with
real TLS origins and clients that verify them.
"""

from __future__ import annotations

import trustme
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.test_clienthello import openssl_hello
from tests.test_tcp import HalfCloseTransport
from txproxy import config
from txproxy.balancing import RoundRobin
from txproxy.clienthello import MAX_CLIENT_HELLO, SNIRoutes
from txproxy.pool import Pool, ServerState
from txproxy.service import ProxyService, makeService
from txproxy.tcp import Relay, RelayFactory, RelayTarget, SNIRelay, UpstreamRelay

CLIENT = IPv4Address("TCP", "192.0.2.7", 40000)


class SNIRelayTests(SynchronousTestCase):
    """
    Tests for L{SNIRelay}: the pool is chosen by the ClientHello's server name.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.db = Pool(
            "db", [ServerState("10.0.0.1:5432"), ServerState("10.0.0.2:5432")], RoundRobin()
        )
        self.net = Pool("net", [ServerState("10.0.1.1:443")], RoundRobin())
        self.default = Pool("default", [ServerState("10.0.2.1:443")], RoundRobin())
        self.routes = SNIRoutes(
            [
                ("db.example.com", RelayTarget(self.db, retries=1)),
                ("*.example.net", RelayTarget(self.net, retries=0)),
            ]
        )

    def relay(
        self, pool: Pool | None = None, routes: SNIRoutes[RelayTarget] | None = None
    ) -> tuple[Relay, HalfCloseTransport]:
        """
        A relay of a listener with SNI routes, connected to a client.

        @param pool: the listener's pool; the default one unless given.
        """
        factory = RelayFactory(
            pool,
            self.reactor,
            connect_timeout=5.0,
            idle_timeout=600.0,
            retries=0,
            sni_routes=self.routes if routes is None else routes,
            hello_timeout=10.0,
        )
        self.factory = factory
        client = HalfCloseTransport(peerAddress=CLIENT)
        relay = factory.buildProtocol(CLIENT)
        assert relay is not None
        relay.makeConnection(client)
        return relay, client

    def accept(self, relay: Relay) -> HalfCloseTransport:
        """
        Let the last upstream connection attempt succeed; return its transport.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        transport = HalfCloseTransport()
        factory.buildProtocol(IPv4Address("TCP", host, port)).makeConnection(transport)
        assert isinstance(relay.peer, UpstreamRelay)
        return transport

    def connected_to(self) -> list[tuple[str, int]]:
        """
        The servers the relays tried to connect to, in order.
        """
        return [(host, port) for host, port, _, _, _ in self.reactor.tcpClients]

    def test_plain_factory_makes_plain_relays(self) -> None:
        """
        Without SNI routes the factory makes plain L{Relay}s, which connect at
        once; with them, L{SNIRelay}s.
        """
        factory = RelayFactory(self.default, self.reactor, 5.0, 600.0, 0)
        self.assertIs(type(factory.buildProtocol(CLIENT)), Relay)
        relay, _ = self.relay(self.default)
        self.assertIsInstance(relay, SNIRelay)

    def test_factory_needs_a_pool_or_routes(self) -> None:
        """
        A factory with nowhere to send clients, or with SNI routes but no limit
        on the time to read the ClientHello, is refused.
        """
        self.assertRaises(ValueError, RelayFactory, None, self.reactor, 5.0, 600.0, 0)
        self.assertRaises(
            ValueError,
            RelayFactory,
            self.default,
            self.reactor,
            5.0,
            600.0,
            0,
            sni_routes=self.routes,
        )

    def test_reads_before_connecting(self) -> None:
        """
        The client is read, not paused, and nothing is connected until the
        ClientHello is whole; then the client is held still until a server
        of the named pool accepts, and that server gets every byte in order.
        """
        hello = openssl_hello("TLSv1.3", b"db.example.com")
        relay, client = self.relay(self.default)
        self.assertEqual(client.producerState, "producing")
        relay.dataReceived(hello[:100])
        self.assertEqual(self.reactor.tcpClients, [])
        relay.dataReceived(hello[100:] + b"early")
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(self.connected_to(), [("10.0.0.1", 5432)])
        relay.dataReceived(b" more")
        upstream = self.accept(relay)
        self.assertEqual(upstream.value(), hello + b"early more")
        self.assertEqual(client.producerState, "producing")
        relay.dataReceived(b"after")
        self.assertEqual(upstream.value(), hello + b"early moreafter")

    def test_wildcard_route(self) -> None:
        """
        A name below a wildcard pattern goes to that route's pool.
        """
        relay, _ = self.relay(self.default)
        relay.dataReceived(openssl_hello("TLSv1.2", b"A.B.Example.NET"))
        self.assertEqual(self.connected_to(), [("10.0.1.1", 443)])

    def test_default_pool(self) -> None:
        """
        A name no route takes, a ClientHello without SNI, and bytes that are
        not a ClientHello all go to the listener's pool, the bytes unchanged.
        """
        for data in (
            openssl_hello("TLSv1.3", b"other.example.org"),
            openssl_hello("TLSv1.3", None),
            b"GET / HTTP/1.1\r\n\r\n",
        ):
            relay, _ = self.relay(self.default)
            relay.dataReceived(data)
            self.assertEqual(self.connected_to()[-1], ("10.0.2.1", 443))
            self.assertEqual(self.accept(relay).value(), data)
        self.assertEqual(len(self.reactor.tcpClients), 3)

    def test_no_default_pool_closes(self) -> None:
        """
        Without a listener pool, a client no route takes is closed without a
        connect, and an info event names the client and the name it asked for.
        """
        relay, client = self.relay(None)
        with capturedLogs() as events:
            relay.dataReceived(openssl_hello("TLSv1.3", b"other.example.org"))
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.reactor.tcpClients, [])
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["client"], CLIENT)
        self.assertEqual(event["name"], "other.example.org")
        self.assertEqual(event["reason"], "no SNI route matched")

    def test_no_default_pool_not_tls(self) -> None:
        """
        Without a listener pool, a client that does not speak TLS is closed at
        its first byte, logged with no name and why.
        """
        relay, client = self.relay(None)
        with capturedLogs() as events:
            relay.dataReceived(b"G")
        self.assertTrue(client.disconnecting)
        [event] = events
        self.assertIsNone(event["name"])
        self.assertEqual(event["reason"], "not a TLS handshake record")

    def test_no_default_pool_no_sni(self) -> None:
        """
        Without a listener pool, a ClientHello without SNI is closed, logged
        with no name.
        """
        relay, client = self.relay(None)
        with capturedLogs() as events:
            relay.dataReceived(openssl_hello("TLSv1.2", None))
        self.assertTrue(client.disconnecting)
        [event] = events
        self.assertIsNone(event["name"])
        self.assertEqual(event["reason"], "no SNI")

    def test_route_retries(self) -> None:
        """
        A failed connect is retried as often as the chosen route's pool says,
        on its other servers.
        """
        relay, client = self.relay(self.default)
        relay.dataReceived(openssl_hello("TLSv1.3", b"db.example.com"))
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(
            self.reactor.connectors[-1], Failure(ConnectionRefusedError())
        )
        self.assertEqual(self.connected_to(), [("10.0.0.1", 5432), ("10.0.0.2", 5432)])
        self.assertFalse(client.disconnecting)
        relay, client = self.relay(self.default)
        relay.dataReceived(openssl_hello("TLSv1.3", b"x.example.net"))
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(
            self.reactor.connectors[-1], Failure(ConnectionRefusedError())
        )
        self.assertTrue(client.disconnecting)
        self.assertEqual(len(self.reactor.tcpClients), 3)

    def test_silent_client_closed(self) -> None:
        """
        A client that sends nothing is closed after C{hello_timeout}, not
        before, and leaves no timer behind.
        """
        relay, client = self.relay(self.default)
        self.reactor.advance(9.9)
        self.assertFalse(client.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.reactor.tcpClients, [])
        relay.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.factory.relays, set())

    def test_trickling_client_closed(self) -> None:
        """
        The time to send the ClientHello is not renewed by each byte: a client
        trickling one is closed when the time is up.
        """
        hello = openssl_hello("TLSv1.3", b"db.example.com")
        relay, client = self.relay(self.default)
        for index in range(10):
            relay.dataReceived(hello[index : index + 1])
            self.reactor.advance(0.99)
        self.assertFalse(client.disconnecting)
        self.reactor.advance(0.1)
        self.assertTrue(client.disconnecting)
        self.assertEqual(self.reactor.tcpClients, [])

    def test_hello_timer_stopped_once_routed(self) -> None:
        """
        Once the pool is chosen the ClientHello timer is gone: only the idle
        timer is left, and the relay outlives C{hello_timeout}.
        """
        relay, client = self.relay(self.default)
        relay.dataReceived(openssl_hello("TLSv1.3", b"db.example.com"))
        self.accept(relay)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(60)
        self.assertFalse(client.disconnecting)

    def test_half_close_before_whole_hello(self) -> None:
        """
        A client that stops sending before its ClientHello is whole goes to the
        listener's pool with what it sent, and the server's write side is closed.
        """
        hello = openssl_hello("TLSv1.3", b"db.example.com")
        relay, _ = self.relay(self.default)
        relay.dataReceived(hello[:50])
        relay.readConnectionLost()
        self.assertEqual(self.connected_to(), [("10.0.2.1", 443)])
        upstream = self.accept(relay)
        self.assertEqual(upstream.value(), hello[:50])
        self.assertTrue(upstream.write_closed)

    def test_client_leaves_while_reading(self) -> None:
        """
        A client that leaves before its ClientHello is whole leaves no timer
        and no relay behind.
        """
        relay, _ = self.relay(self.default)
        relay.dataReceived(b"\x16\x03\x01")
        relay.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.factory.relays, set())
        self.assertEqual(self.reactor.tcpClients, [])

    def test_oversized_hello_bounded(self) -> None:
        """
        A ClientHello that is not whole after L{MAX_CLIENT_HELLO} bytes stops
        the reading: the client is paused and the bytes go, unchanged, to the
        listener's pool.
        """
        relay, client = self.relay(self.default)
        # Said to be 60000 bytes, within the limit, but sent a byte a record.
        message = b"\x01" + (60000).to_bytes(3, "big") + b"\x03\x03" + bytes(59998)
        sent = b""
        for byte in message:
            if self.reactor.tcpClients:
                break
            self.assertLess(len(sent), MAX_CLIENT_HELLO)
            record = b"\x16\x03\x01\x00\x01" + bytes([byte])
            relay.dataReceived(record)
            sent += record
        self.assertGreaterEqual(len(sent), MAX_CLIENT_HELLO)
        self.assertLess(len(sent), MAX_CLIENT_HELLO + len(record))
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(self.connected_to(), [("10.0.2.1", 443)])
        self.assertEqual(self.accept(relay).value(), sent)

    def test_close_connections_while_reading(self) -> None:
        """
        Stopping the listener closes relays still reading a ClientHello.
        """
        relay, client = self.relay(self.default)
        closed = self.factory.close_connections()
        self.assertTrue(client.disconnecting)
        relay.connectionLost(Failure(ConnectionRefusedError()))
        self.assertIsNone(self.successResultOf(closed))
        self.assertEqual(self.reactor.getDelayedCalls(), [])


@implementer(IHandshakeListener)
class TLSOrigin(Protocol):
    """
    A TLS origin that, once the handshake is done, says its name and the
    server name its client sent, then echoes.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)

    def handshakeCompleted(self) -> None:
        server_name = self.transport.getHandle().get_servername()
        self.transport.write(b"%s %s\n" % (self.factory.name, server_name or b"-"))

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class RecordingOrigin(Protocol):
    """
    A plain origin that keeps every byte it receives and echoes it.
    """

    def connectionMade(self) -> None:
        self.received = b""
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.transport.write(data)
        waiting = self.factory.waiting
        if waiting is not None and len(self.received) >= waiting[0]:
            self.factory.waiting = None
            waiting[1].callback(self.received)


class Collector(Protocol):
    """
    A client that keeps what it receives.

    @ivar done: fires with the bytes received when the connection is lost.
    """

    def __init__(self) -> None:
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.received)


class FirstLine(Collector):
    """
    A client that closes once it has one line.

    @ivar version: the TLS version of its connection, once it has a line.
    """

    version: str | None = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if b"\n" in self.received and self.version is None:
            handle = getattr(self.transport, "getHandle", lambda: None)()
            self.version = getattr(handle, "get_protocol_version_name", lambda: "")()
            self.transport.loseConnection()


class SNIListenerTests(TestCase):
    """
    TCP listeners with SNI routes, built by L{makeService}, over loopback:
    each client's TLS handshake is with the origin of the pool its server name
    picks, and it verifies that origin's certificate.
    """

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.factories: dict[int, Factory[Protocol]] = {}

    def origin(
        self, name: bytes, *identities: str, protocol: type[Protocol] = TLSOrigin
    ) -> IListeningPort:
        """
        Start an origin on a free loopback port until the test ends: TLS with
        a certificate for C{identities}, or plain without any.
        """
        factory = Factory.forProtocol(protocol)
        factory.noisy = False
        factory.name = name
        factory.connections = []
        factory.waiting = None
        if identities:
            leaf = self.ca.issue_cert(*identities)
            pem = leaf.private_key_and_cert_chain_pem.bytes()
            options = PrivateCertificate.loadPEM(pem).options()
            port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        else:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.factories[port.getHost().port] = factory
        return port

    def connections(self, origin: IListeningPort) -> list[Protocol]:
        """
        The connections C{origin} has accepted.
        """
        return self.factories[origin.getHost().port].connections

    def pool(self, name: str, origin: IListeningPort) -> config.Pool:
        return config.Pool(name, servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])

    def proxy(self, sni_routes: dict[str, config.Pool], pool: config.Pool | None) -> ProxyService:
        """
        Start a proxy with one TCP listener with these SNI routes and pool.
        """
        listener = config.TCPListener("tcp:0:interface=127.0.0.1", pool=pool, sni_routes=sni_routes)
        service = makeService(config.Proxy(listeners=[listener]), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def listening_port(self, service: ProxyService) -> int:
        port = service.listeners[0].port
        assert port is not None
        return port.getHost().port

    def origins(self) -> ProxyService:
        """
        Start three TLS origins, A for C{db.example.com}, B for C{*.example.net}
        and a default one for C{other.example.org} and 127.0.0.1, and a proxy
        routing the first two names to A and B and the rest to the default.
        """
        self.a = self.origin(b"a", "db.example.com")
        self.b = self.origin(b"b", "*.example.net")
        self.d = self.origin(b"default", "other.example.org", "127.0.0.1")
        return self.proxy(
            {"db.example.com": self.pool("a", self.a), "*.example.net": self.pool("b", self.b)},
            self.pool("default", self.d),
        )

    @inlineCallbacks
    def greeting(
        self, port: int, server_name: str, max_version: TLSVersion | None = None
    ) -> Deferred[FirstLine]:
        """
        Connect to C{port} with TLS, asking for C{server_name} (an IP address
        sends no SNI) and verifying the certificate against it; return the
        client once the connection is closed.
        """
        extra = {} if max_version is None else {"lowerMaximumSecurityTo": max_version}
        options = optionsForClientTLS(
            server_name,
            trustRoot=Certificate.loadPEM(self.ca.cert_pem.bytes()),
            extraCertificateOptions=extra,
        )
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        client = FirstLine()
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        yield client.done
        return client

    @inlineCallbacks
    def test_certificates_are_checked(self) -> Deferred[None]:
        """
        The clients of these tests verify certificates: asking origin A
        directly for B's name fails the handshake, so each greeting below
        shows both the origin reached and that its certificate fit the name.
        """
        a = self.origin(b"a", "db.example.com")
        client = yield self.greeting(a.getHost().port, "x.example.net")
        self.assertEqual(client.received, b"")
        client = yield self.greeting(a.getHost().port, "db.example.com")
        self.assertEqual(client.received, b"a db.example.com\n")

    @inlineCallbacks
    def test_exact_name(self) -> Deferred[None]:
        """
        A client asking for C{db.example.com} has its TLS 1.3 handshake with
        pool A's origin, which got the name.
        """
        service = self.origins()
        client = yield self.greeting(self.listening_port(service), "db.example.com")
        self.assertEqual(client.received, b"a db.example.com\n")
        self.assertEqual(client.version, "TLSv1.3")

    @inlineCallbacks
    def test_wildcard_name(self) -> Deferred[None]:
        """
        A client asking for a name below C{*.example.net} reaches pool B's origin.
        """
        service = self.origins()
        client = yield self.greeting(self.listening_port(service), "api.example.net")
        self.assertEqual(client.received, b"b api.example.net\n")

    @inlineCallbacks
    def test_tls_1_2(self) -> Deferred[None]:
        """
        A TLS 1.2 client is routed by its name as well.
        """
        service = self.origins()
        port = self.listening_port(service)
        client = yield self.greeting(port, "db.example.com", TLSVersion.TLSv1_2)
        self.assertEqual(client.received, b"a db.example.com\n")
        self.assertEqual(client.version, "TLSv1.2")
        client = yield self.greeting(port, "api.example.net", TLSVersion.TLSv1_2)
        self.assertEqual(client.received, b"b api.example.net\n")

    @inlineCallbacks
    def test_unknown_name_and_no_sni(self) -> Deferred[None]:
        """
        A name no route takes, and a client that sends no SNI at all, reach
        the listener's pool.
        """
        service = self.origins()
        port = self.listening_port(service)
        client = yield self.greeting(port, "other.example.org")
        self.assertEqual(client.received, b"default other.example.org\n")
        client = yield self.greeting(port, "127.0.0.1")
        self.assertEqual(client.received, b"default -\n")
        self.assertEqual(self.connections(self.a) + self.connections(self.b), [])

    @inlineCallbacks
    def test_no_default_pool(self) -> Deferred[None]:
        """
        Without a listener pool, a client asking for a name no route takes is
        closed, and no origin is contacted.
        """
        a = self.origin(b"a", "db.example.com")
        service = self.proxy({"db.example.com": self.pool("a", a)}, None)
        port = self.listening_port(service)
        client = yield self.greeting(port, "other.example.org")
        self.assertEqual(client.received, b"")
        client = yield self.greeting(port, "127.0.0.1")
        self.assertEqual(client.received, b"")
        self.assertEqual(self.connections(a), [])
        client = yield self.greeting(port, "db.example.com")
        self.assertEqual(client.received, b"a db.example.com\n")

    @inlineCallbacks
    def exchange(self, port: int, origin: IListeningPort, pieces: list[bytes]) -> Deferred[bytes]:
        """
        Send C{pieces} through the proxy as separate writes; return what
        C{origin} received, once it has all of it, and check the echo.
        """
        expected = b"".join(pieces)
        arrived: Deferred[bytes] = Deferred()
        self.factories[origin.getHost().port].waiting = (len(expected), arrived)
        client = Collector()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoint.connect(Factory.forProtocol(lambda: client))
        for piece in pieces:
            client.transport.write(piece)
        received = yield arrived
        client.transport.loseConnection()
        echoed = yield client.done
        self.assertEqual(echoed, expected[: len(echoed)])
        return received

    @inlineCallbacks
    def test_not_tls_byte_for_byte(self) -> Deferred[None]:
        """
        A client that does not speak TLS goes to the listener's pool, and its
        bytes arrive unchanged.
        """
        a = self.origin(b"a", "db.example.com")
        plain = self.origin(b"plain", protocol=RecordingOrigin)
        service = self.proxy({"db.example.com": self.pool("a", a)}, self.pool("plain", plain))
        pieces = [b"PING\r\n", b"\x00\xff\x16\x03 binary\n"]
        received = yield self.exchange(self.listening_port(service), plain, pieces)
        self.assertEqual(received, b"".join(pieces))
        self.assertEqual(self.connections(a), [])

    @inlineCallbacks
    def test_client_hello_byte_for_byte(self) -> Deferred[None]:
        """
        The server of the route gets the ClientHello exactly as sent, however
        the client cut it, and the bytes after it.
        """
        plain = self.origin(b"plain", protocol=RecordingOrigin)
        other = self.origin(b"other", protocol=RecordingOrigin)
        service = self.proxy(
            {"db.example.com": self.pool("plain", plain)}, self.pool("other", other)
        )
        hello = openssl_hello("TLSv1.3", b"db.example.com")
        pieces = [hello[:3], hello[3:700], hello[700:], b"\x17\x03\x03\x00\x01x"]
        received = yield self.exchange(self.listening_port(service), plain, pieces)
        self.assertEqual(received, b"".join(pieces))
        self.assertEqual(self.connections(other), [])
