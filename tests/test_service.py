"""
Integration tests for L{txproxy.service}: a TCP listener over real loopback sockets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.loopback import (
    Pump,
    RawClient,
    buffered,
    connect_raw,
    split_response,
    stalled,
    start_origin,
)
from txproxy import config
from txproxy.interfaces import IBalancer, IServerView, PickContext
from txproxy.service import ProxyService, makeService
from txproxy.tcp import RelayFactory
from txproxy.tls import CertificateError

TOTAL = 64 * 1024 * 1024


class NamedOrigin(Protocol):
    """
    An origin that greets with its name and then echoes.
    """

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name.encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Firehose(Protocol):
    """
    An origin that sends L{TOTAL} bytes as fast as its client takes them.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.pump = Pump(self.transport, TOTAL, self.transport.loseConnection)


class Reader(Protocol):
    """
    A client that collects what it receives; C{done} fires with it at close.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.count = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        if len(self.received) < 4:
            self.received.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(b"".join(self.received))


class FirstLine(Reader):
    """
    A client that closes once it has read one line.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if b"\n" in b"".join(self.received):
            self.transport.loseConnection()


@implementer(IBalancer)
class LastAvailable:
    """
    A user's balancer: always the last server that may take work.
    """

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        eligible = [s for s in servers if s.available and s.address not in context.exclude]
        return eligible[-1] if eligible else None


class TCPListenerTests(TestCase):
    """
    A TCP listener built by L{makeService}, relaying to origins on loopback.
    """

    def origin(self, name: str, protocol: type[Protocol] = NamedOrigin) -> IListeningPort:
        """
        Start an origin on a free loopback port; it stops at the end of the test.
        """
        factory = Factory.forProtocol(protocol)
        factory.name = name
        factory.connections = []
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port

    def proxy(
        self, *ports: IListeningPort, balancer: str | IBalancer = "round_robin"
    ) -> ProxyService:
        """
        Start a proxy with one TCP listener over the given origins.
        """
        pool = config.Pool(
            "origins",
            servers=[config.Server(f"127.0.0.1:{port.getHost().port}") for port in ports],
            balancer=balancer,
        )
        service = makeService(
            config.Proxy(listeners=[config.TCPListener("tcp:0:interface=127.0.0.1", pool=pool)]),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def connect(self, service: ProxyService, protocol: Protocol) -> Deferred[Protocol]:
        port = service.listeners[0].port
        assert port is not None
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: protocol)
        )

    @inlineCallbacks
    def greeting(self, service: ProxyService) -> Deferred[bytes]:
        """
        Connect through the proxy and return the first line the origin sent.
        """
        client = FirstLine()
        yield self.connect(service, client)
        received = yield client.done
        return received

    @inlineCallbacks
    def test_round_robin_reaches_both_origins(self) -> Deferred[None]:
        """
        Successive connections go to the origins in turn.
        """
        service = self.proxy(self.origin("a"), self.origin("b"))
        names = []
        for _ in range(4):
            names.append((yield self.greeting(service)))
        self.assertEqual(names, [b"a\n", b"b\n", b"a\n", b"b\n"])

    @inlineCallbacks
    def test_user_balancer(self) -> Deferred[None]:
        """
        A pool's balancer may be any L{IBalancer} provider of the user's.
        """
        service = self.proxy(self.origin("a"), self.origin("b"), balancer=LastAvailable())
        names = []
        for _ in range(3):
            names.append((yield self.greeting(service)))
        self.assertEqual(names, [b"b\n"] * 3)

    @inlineCallbacks
    def test_dead_origin_skipped(self) -> Deferred[None]:
        """
        When an origin dies, connections go to the other one, and the refused
        connects are counted against the dead server.
        """
        a, b = self.origin("a"), self.origin("b")
        service = self.proxy(a, b)
        dead_address = f"127.0.0.1:{b.getHost().port}"
        yield b.stopListening()
        names = []
        for _ in range(3):
            names.append((yield self.greeting(service)))
        self.assertEqual(names, [b"a\n"] * 3)
        dead = service.pools["origins"].server(dead_address)
        self.assertGreaterEqual(dead.failures, 1)
        self.assertEqual(dead.active, 0)

    @inlineCallbacks
    def test_no_origin_closes_client(self) -> Deferred[None]:
        """
        With every origin dead, the client connection is closed without data.
        """
        a = self.origin("a")
        service = self.proxy(a)
        yield a.stopListening()
        received = yield self.greeting(service)
        self.assertEqual(received, b"")

    @inlineCallbacks
    def test_echo_through_relay(self) -> Deferred[None]:
        """
        Bytes the client sends reach the origin, and its answers come back.
        """
        service = self.proxy(self.origin("a"))
        client = Reader()
        yield self.connect(service, client)
        client.transport.write(b"hello\n")
        while client.count < len(b"a\nhello\n"):
            yield deferLater(reactor, 0.01)
        client.transport.loseConnection()
        received = yield client.done
        self.assertEqual(received.replace(b"a\n", b"", 1), b"hello\n")

    @inlineCallbacks
    def test_slow_reader_bounds_memory(self) -> Deferred[None]:
        """
        A client that stops reading stops the origin through the relay: the
        proxy holds little in memory and the origin stalls, and once the client
        reads again every byte arrives.
        """
        firehose = self.origin("firehose", Firehose)
        service = self.proxy(firehose)
        client = Reader()
        yield self.connect(service, client)
        client.transport.pauseProducing()
        [relay_factory] = [listener.factory for listener in service.listeners]
        assert isinstance(relay_factory, RelayFactory)
        origins = firehose.factory.connections
        sent = yield stalled(lambda: origins[0].pump.sent if origins else 0)
        self.assertLess(sent, TOTAL // 2)
        [relay] = relay_factory.relays
        held = buffered(relay.transport) + buffered(relay.peer.transport)
        self.assertLess(held, 1024 * 1024)
        client.transport.resumeProducing()
        yield client.done
        self.assertEqual(client.count, TOTAL)


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for what L{makeService} builds, without starting it.
    """

    def test_tree(self) -> None:
        """
        The tree has the health checks first, then one child per listener,
        and one runtime pool per pool.
        """
        pool = config.Pool("db", servers=[config.Server("127.0.0.1:5432")], balancer="ip_hash")
        service = makeService(
            config.Proxy(
                listeners=[
                    config.TCPListener("tcp:0", pool=pool),
                    config.TCPListener("tcp:1", pool=pool),
                ]
            ),
            reactor,
        )
        self.assertEqual(list(service), [service.health, *service.listeners])
        self.assertEqual(len(service.listeners), 2)
        self.assertEqual(list(service.pools), ["db"])
        self.assertEqual(service.listeners[1].description, "tcp:1")

    def test_tls_listener_bad_certificate(self) -> None:
        """
        A TLS listener whose certificate file cannot be read is refused before
        anything starts, with the file named.
        """
        pool = config.Pool("web", servers=[config.Server("127.0.0.1:80")])
        tls = config.TLS(certificates=["no-such-site.pem"])
        listener = config.HTTPListener("tcp:0", routes=[config.Route(pool)], tls=tls)
        proxy = config.Proxy(listeners=[listener])
        error = self.assertRaises(CertificateError, makeService, proxy, reactor)
        self.assertEqual(error.path, "no-such-site.pem")


class AdminWiringTests(TestCase):
    """
    The admin API, as L{makeService} builds it from C{Proxy(admin=)}.
    """

    @inlineCallbacks
    def test_admin_changes_running_pool(self) -> Deferred[None]:
        """
        With a token set, the admin endpoint refuses a request without it,
        and with it lists the pools and adds a server the running pool then has.
        """
        pool = config.Pool("web", servers=[config.Server("127.0.0.1:8081")])
        service = makeService(
            config.Proxy(
                listeners=[
                    config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[config.Route(pool)])
                ],
                admin=config.Admin("tcp:0:interface=127.0.0.1", token="s3cret"),
            ),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        assert service.admin is not None and service.admin.port is not None
        port = service.admin.port.getHost().port

        client: RawClient = yield connect_raw(port)
        client.transport.write(b"GET /pools HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = yield client.closed
        self.assertEqual(split_response(data)[0], 401)

        body = b'{"address": "127.0.0.1:8082", "weight": 2}'
        client = yield connect_raw(port)
        client.transport.write(
            b"POST /pools/web/servers HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = yield client.closed
        self.assertEqual(split_response(data)[0], 201)
        self.assertEqual(
            [server.address for server in service.pools["web"].servers],
            ["127.0.0.1:8081", "127.0.0.1:8082"],
        )

        client = yield connect_raw(port)
        client.transport.write(
            b"GET /pools HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = yield client.closed
        status, _, answer = split_response(data)
        self.assertEqual(status, 200)
        [described] = json.loads(answer)["pools"]
        self.assertEqual(described["name"], "web")
        self.assertEqual(len(described["servers"]), 2)

    @inlineCallbacks
    def test_removed_server_idle_connections_closed(self) -> Deferred[None]:
        """
        A server the admin API removes has its idle upstream connections
        closed as it leaves, not when they expire.
        """
        origin = start_origin(self)
        address = f"127.0.0.1:{origin.getHost().port}"
        pool = config.Pool("web", servers=[config.Server(address)])
        service = makeService(
            config.Proxy(
                listeners=[
                    config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[config.Route(pool)])
                ],
                admin=config.Admin("tcp:0:interface=127.0.0.1"),
            ),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        assert service.listeners[0].port is not None
        client: RawClient = yield connect_raw(service.listeners[0].port.getHost().port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        yield client.closed
        server = service.pools["web"].server(address)
        self.assertEqual(service.idle["web"].count(server), 1)
        assert service.admin_site is not None
        service.admin_site.root.api.remove_server("web", address, "test")
        self.assertEqual(service.idle["web"].count(server), 0)


class FootprintTests(SynchronousTestCase):
    """
    What a configuration does not use is not loaded: each module costs every
    process its memory.
    """

    def test_plain_http_loads_neither_web_nor_h2(self) -> None:
        """
        Running a plain HTTP listener without an admin API imports neither
        twisted.web (the admin API's) nor h2 (HTTP/2's).
        """
        program = (
            "import sys\n"
            "from twisted.internet import reactor\n"
            "from txproxy import config\n"
            "from txproxy.service import makeService\n"
            "pool = config.Pool('web', servers=[config.Server('127.0.0.1:1')])\n"
            "listener = config.HTTPListener('tcp:0', routes=[config.Route(pool)])\n"
            "makeService(config.Proxy(listeners=[listener]), reactor)\n"
            "print(sorted(name for name in ('twisted.web', 'h2') if name in sys.modules))\n"
        )
        output = subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(output.strip(), "[]")
