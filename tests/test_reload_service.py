"""
Tests for reloading a running proxy in place (L{ProxyService.reload}) and for
stopping it gracefully, over real loopback sockets, with the pieces a reload
changes (factories, pools, idle upstream connections, health checks, TLS)
tested on their own with memory transports.
"""

from __future__ import annotations

import os

import trustme
from attrs import field, frozen
from twisted.application.service import IService, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorCore
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.loopback import RawClient, connect_raw, split_response
from tests.test_failover_load import until
from tests.test_http_channel import GET, OK, MemoryListener
from tests.tlsclient import ClientHello, connect_tls, names, write_leaf
from txproxy import config
from txproxy.balancing import RoundRobin
from txproxy.clienthello import SNIRoutes
from txproxy.health import HealthService
from txproxy.http.upstream import IdleUpstreams, UpstreamProtocol
from txproxy.interfaces import IServiceFactory
from txproxy.pool import Pool, ServerState, ServerStatus
from txproxy.service import ProxyService, ReloadRefused, build_pool, makeService
from txproxy.tcp import Relay, RelayFactory, RelayTarget, SNIRelay
from txproxy.tls import ServerTLS

LOCAL = "tcp:0:interface=127.0.0.1"
"""
A listener on a port the system picks. Endpoints on port 0 have no place of
their own: a reload matches them by their string, so the tests tell
listeners apart by writing the endpoint differently.
"""

OTHER = "tcp:port=0:interface=127.0.0.1"


class Gate(Protocol):
    """
    An HTTP/1.1 origin that answers each request with its factory's name,
    keeping the connection alive; while its factory C{hold}s, it answers only
    when the test calls L{answer}.

    @ivar requests: the requests it read.
    @ivar closed: fires once the connection is gone.
    """

    factory: GateFactory

    def connectionMade(self) -> None:
        self.buffer = b""
        self.requests = 0
        self.closed: Deferred[None] = Deferred()
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.requests += 1
            self.factory.requests += 1
            if self.factory.hold:
                self.factory.held.put(self)
            else:
                self.answer()

    def answer(self) -> None:
        """
        Answer one request with the factory's name.
        """
        name = self.factory.name
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))

    def connectionLost(self, reason: Failure) -> None:
        self.closed.callback(None)


class GateFactory(Factory):
    """
    Makes L{Gate}s, and keeps what the test needs of them.

    @ivar held: the connections holding a request, as they get one.
    @ivar requests: the requests read on every connection.
    """

    protocol = Gate
    noisy = False

    def __init__(self, name: bytes, hold: bool = False) -> None:
        self.name = name
        self.hold = hold
        self.held: DeferredQueue[Gate] = DeferredQueue()
        self.connections: list[Gate] = []
        self.requests = 0
        self.address = ""


class Greeter(Protocol):
    """
    A TCP origin that greets with its factory's name and then echoes.
    """

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class KeptAlive(RawClient):
    """
    A client on a kept-alive connection: L{ask} sends a request and fires
    with the body of its response.
    """

    def __init__(self) -> None:
        super().__init__()
        self._bodies: DeferredQueue[bytes] = DeferredQueue()
        self._unread = b""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._unread += data
        while b"\r\n\r\n" in self._unread:
            head, _, rest = self._unread.partition(b"\r\n\r\n")
            length = int(split_response(head + b"\r\n\r\n")[1][b"content-length"][0])
            if len(rest) < length:
                return
            self._unread = rest[length:]
            self._bodies.put(rest[:length])

    def ask(self, path: bytes) -> Deferred[bytes]:
        """
        Send a request for C{path}; fire with the body of the next response.
        """
        self.transport.write(request(path))
        return self._bodies.get()


def request(path: bytes = b"/", close: bool = False) -> bytes:
    """
    A GET request for C{path}.
    """
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + connection + b"\r\n"


@implementer(IServiceFactory)
@frozen
class Recorded:
    """
    A user's service factory, equal to another of the same name; the
    services it makes are kept in C{made}.
    """

    name: str
    made: list[IService] = field(factory=list, eq=False)

    def make_service(self, reactor: IReactorCore) -> IService:
        service = Service()
        self.made.append(service)
        return service


class ReloadTests(TestCase):
    """
    L{ProxyService.reload} on a proxy built by L{makeService}, serving
    loopback clients from loopback origins.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    def origin(self, name: bytes, hold: bool = False) -> GateFactory:
        """
        Start an HTTP origin until the test ends.
        """
        factory = GateFactory(name, hold)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        factory.address = f"127.0.0.1:{port.getHost().port}"
        return factory

    def greeter(self, name: bytes) -> str:
        """
        Start a TCP origin until the test ends; return its address.
        """
        factory = Factory.forProtocol(Greeter)
        factory.name = name
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"127.0.0.1:{port.getHost().port}"

    def pool(self, name: str, *origins: GateFactory | str, **settings: object) -> config.Pool:
        return config.Pool(
            name,
            servers=[
                config.Server(each if isinstance(each, str) else each.address) for each in origins
            ],
            **settings,
        )

    def start(self, proxy: config.Proxy) -> ProxyService:
        service = makeService(proxy, reactor)
        service.startService()

        def stop() -> Deferred[object] | None:
            return service.stopService() if service.running else None

        self.addCleanup(stop)
        return service

    def port(self, service: ProxyService, index: int = 0) -> int:
        port = service.listeners[index].port
        assert port is not None
        return port.getHost().port

    @inlineCallbacks
    def kept_alive(self, port: int) -> Deferred[KeptAlive]:
        """
        Open a connection that sends requests one after the other.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = yield endpoint.connect(Factory.forProtocol(KeptAlive))
        return client

    @inlineCallbacks
    def fetch(self, port: int, path: bytes = b"/") -> Deferred[tuple[int, bytes]]:
        """
        One request on a new connection; return the status and body.
        """
        client: RawClient = yield connect_raw(port)
        client.transport.write(request(path, close=True))
        data = yield client.closed
        status, _, body = split_response(data)
        return status, body

    @inlineCallbacks
    def test_kept_listener_keeps_socket(self) -> Deferred[None]:
        """
        A reload that changes a listener's routes keeps its listening socket,
        and a request in flight across the reload is answered.
        """
        a, b = self.origin(b"a", hold=True), self.origin(b"b")
        pool_a = self.pool("a", a)
        service = self.start(config.Proxy([config.HTTPListener(LOCAL, [config.Route(pool_a)])]))
        listening = service.listeners[0].port
        client: RawClient = yield connect_raw(self.port(service))
        client.transport.write(request())
        held: Gate = yield a.held.get()

        changes = service.reload(
            config.Proxy(
                [
                    config.HTTPListener(
                        LOCAL,
                        [config.Route(self.pool("b", b), path="/b/"), config.Route(pool_a)],
                    )
                ]
            )
        )
        yield service.reloaded()
        self.assertEqual([change.changed for change in changes.listeners_changed], [("routes",)])
        self.assertIs(service.listeners[0].port, listening)
        held.answer()
        yield client.wait_for(b"\r\n\r\na")
        self.assertEqual(split_response(client.received)[0], 200)
        status, body = yield self.fetch(self.port(service), b"/b/")
        self.assertEqual((status, body), (200, b"b"))
        self.assertIn("listener tcp:0:interface=127.0.0.1: routes changed", self.logged())
        client.transport.loseConnection()

    @inlineCallbacks
    def test_new_route_on_same_connection(self) -> Deferred[None]:
        """
        A route a reload adds takes the next request of a kept-alive
        connection opened before the reload.
        """
        a, b = self.origin(b"a"), self.origin(b"b")
        pool_a = self.pool("a", a)
        service = self.start(config.Proxy([config.HTTPListener(LOCAL, [config.Route(pool_a)])]))
        client: KeptAlive = yield self.kept_alive(self.port(service))
        self.assertEqual((yield client.ask(b"/x")), b"a")
        service.reload(
            config.Proxy(
                [
                    config.HTTPListener(
                        LOCAL,
                        [config.Route(self.pool("b", b), path="/x"), config.Route(pool_a)],
                    )
                ]
            )
        )
        yield service.reloaded()
        self.assertEqual((yield client.ask(b"/x")), b"b")
        self.assertEqual((yield client.ask(b"/y")), b"a")
        client.transport.loseConnection()

    @inlineCallbacks
    def test_removed_server_drains(self) -> Deferred[None]:
        """
        A server a reload removes gets no new request; its idle upstream
        connections close, the request in flight on it is answered, then its
        connection closes and it leaves the pool.
        """
        gone, kept = self.origin(b"gone", hold=True), self.origin(b"kept")
        service = self.start(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("web", gone, kept))])])
        )
        port = self.port(service)
        first: RawClient = yield connect_raw(port)
        first.transport.write(request())
        idle_soon: Gate = yield gone.held.get()
        self.assertEqual((yield self.fetch(port)), (200, b"kept"))
        in_flight: RawClient = yield connect_raw(port)
        in_flight.transport.write(request())
        busy: Gate = yield gone.held.get()
        self.assertIsNot(busy, idle_soon)
        idle_soon.answer()
        yield first.wait_for(b"gone")
        pool, idle = service.pools["web"], service.idle["web"]
        server = pool.server(gone.address)
        self.assertEqual(idle.count(server), 1)

        service.reload(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("web", kept))])])
        )
        yield service.reloaded()
        self.assertIs(server.status, ServerStatus.DRAINING)
        self.assertIn(server, pool.servers)
        yield idle_soon.closed
        self.assertEqual(idle.count(server), 0)
        for _ in range(3):
            self.assertEqual((yield self.fetch(port)), (200, b"kept"))
        self.assertEqual(gone.requests, 2)

        busy.answer()
        yield in_flight.wait_for(b"gone")
        self.assertEqual(split_response(in_flight.received)[0], 200)
        yield busy.closed
        self.assertEqual([each.address for each in pool.servers], [kept.address])
        self.assertIn(f"server {gone.address} of pool web drained", self.logged())
        first.transport.loseConnection()
        in_flight.transport.loseConnection()

    @inlineCallbacks
    def test_added_server_gets_traffic(self) -> Deferred[None]:
        """
        A server a reload adds to a pool takes its share of new requests.
        """
        a, b = self.origin(b"a"), self.origin(b"b")
        service = self.start(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("web", a))])])
        )
        port = self.port(service)
        service.reload(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("web", a, b))])])
        )
        yield service.reloaded()
        bodies = set()
        for _ in range(4):
            _, body = yield self.fetch(port)
            bodies.add(body)
        self.assertEqual(bodies, {b"a", b"b"})

    @inlineCallbacks
    def test_reload_starts_again_from_the_file(self) -> Deferred[None]:
        """
        A reload starts again from the file, as a restart would: a server the
        admin API removed comes back with the file's settings, one it added
        goes, and one it disabled is enabled.
        """
        a, b, c = self.origin(b"a"), self.origin(b"b"), self.origin(b"c")
        listener = config.HTTPListener(LOCAL, [config.Route(self.pool("web", a, b))])
        service = self.start(config.Proxy([listener], admin=config.Admin(OTHER)))
        assert service.admin_site is not None
        api = service.admin_site.root.api
        api.remove_server("web", a.address, "test")
        api.disable_server("web", b.address, "test")
        api.add_server("web", {"address": c.address}, "test")
        pool = config.Pool(
            "web", servers=[config.Server(a.address, weight=2), config.Server(b.address, weight=3)]
        )
        service.reload(
            config.Proxy(
                [config.HTTPListener(LOCAL, [config.Route(pool)])], admin=config.Admin(OTHER)
            )
        )
        yield service.reloaded()
        yield until(
            lambda: c.address not in {each.address for each in service.pools["web"].servers},
            "the server only the admin API added gone",
        )
        servers = service.pools["web"].servers
        self.assertEqual(
            [(each.address, each.configured_weight) for each in servers],
            [(b.address, 3), (a.address, 2)],
        )
        self.assertEqual({each.status for each in servers}, {ServerStatus.UP})
        self.assertIn(f"reload: server {b.address} of pool web enabled again", self.logged())
        self.assertNotIn("could not be applied", self.logged())

    @inlineCallbacks
    def test_pool_added_and_routed(self) -> Deferred[None]:
        """
        A pool a reload adds is run, with its health checks, and a route of
        the same reload sends requests to it; a pool no route uses any more
        is forgotten.
        """
        a, b = self.origin(b"a"), self.origin(b"b")
        service = self.start(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("a", a))])])
        )
        port = self.port(service)
        service.reload(
            config.Proxy(
                [
                    config.HTTPListener(
                        LOCAL, [config.Route(self.pool("b", b, health=config.HealthCheck()))]
                    )
                ]
            )
        )
        yield service.reloaded()
        self.assertEqual(list(service.pools), ["b"])
        self.assertEqual(list(service.idle), ["b"])
        self.assertTrue(service.health.checkers["b"].running)
        self.assertNotIn("a", service.health.checkers)
        self.assertEqual((yield self.fetch(port)), (200, b"b"))

    @inlineCallbacks
    def test_listener_added_and_removed(self) -> Deferred[None]:
        """
        A listener a reload adds listens and serves; one it removes stops
        listening; one it keeps keeps its port.
        """
        a = self.origin(b"a")
        routes = [config.Route(self.pool("a", a))]
        service = self.start(
            config.Proxy([config.HTTPListener(LOCAL, routes), config.HTTPListener(OTHER, routes)])
        )
        kept, removed = self.port(service, 0), self.port(service, 1)
        changes = service.reload(
            config.Proxy(
                [
                    config.HTTPListener(LOCAL, routes),
                    config.HTTPListener("tcp:0:backlog=10:interface=127.0.0.1", routes),
                ]
            )
        )
        yield service.reloaded()
        self.assertEqual([each.endpoint for each in changes.listeners_removed], [OTHER])
        self.assertEqual(len(service.listeners), 2)
        self.assertEqual(self.port(service, 0), kept)
        added = self.port(service, 1)
        self.assertEqual((yield self.fetch(kept)), (200, b"a"))
        self.assertEqual((yield self.fetch(added)), (200, b"a"))
        yield self.assertFailure(connect_raw(removed), ConnectionRefusedError)
        self.assertEqual(len(list(service)), 3)

    @inlineCallbacks
    def test_listener_kind_changed(self) -> Deferred[None]:
        """
        A listener whose place turns from HTTP to TCP is restarted as a TCP
        listener, and the reload is logged as a warning.
        """
        a = self.origin(b"a")
        greeter = self.greeter(b"tcp")
        service = self.start(
            config.Proxy([config.HTTPListener(LOCAL, [config.Route(self.pool("a", a))])])
        )
        changes = service.reload(
            config.Proxy([config.TCPListener(LOCAL, pool=self.pool("db", greeter))])
        )
        yield service.reloaded()
        self.assertTrue(changes.refuses_connections)
        self.assertIsInstance(service.listeners[0].factory, RelayFactory)
        client: RawClient = yield connect_raw(self.port(service))
        yield client.wait_for(b"tcp\n")
        client.transport.loseConnection()
        self.assertIn("reload: listener tcp:0:interface=127.0.0.1: HTTP replaced", self.logged())

    @inlineCallbacks
    def test_tcp_listener_keeps_relays(self) -> Deferred[None]:
        """
        A TCP listener keeps its open relays across a reload that changes its
        pool: they go on to the old server, and new clients go to the new one.
        """
        one, two = self.greeter(b"one"), self.greeter(b"two")
        service = self.start(config.Proxy([config.TCPListener(LOCAL, pool=self.pool("db", one))]))
        port = self.port(service)
        factory = service.listeners[0].factory
        client: RawClient = yield connect_raw(port)
        yield client.wait_for(b"one\n")

        service.reload(
            config.Proxy(
                [
                    config.TCPListener(
                        LOCAL,
                        pool=self.pool("db", two),
                        limits=config.Limits(client_idle_timeout=30.0),
                    )
                ]
            )
        )
        yield service.reloaded()
        self.assertIs(service.listeners[0].factory, factory)
        assert isinstance(factory, RelayFactory)
        self.assertEqual(factory.idle_timeout, 30.0)
        client.transport.write(b"still here\n")
        yield client.wait_for(b"still here\n")
        fresh: RawClient = yield connect_raw(port)
        yield fresh.wait_for(b"two\n")
        fresh.transport.loseConnection()
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_kept_tls_listener_reads_certificates(self) -> Deferred[None]:
        """
        A reload reads the certificate files of a TLS listener it keeps
        again, for new handshakes, keeping its socket.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        ca = trustme.CA()
        path = write_leaf(directory, "site.pem", ca.issue_cert("old.example.com"))
        a = self.origin(b"a")
        proxy = config.Proxy(
            [
                config.HTTPListener(
                    LOCAL,
                    [config.Route(self.pool("a", a))],
                    tls=config.TLS(certificates=[path]),
                )
            ]
        )
        service = self.start(proxy)
        port = self.port(service)
        write_leaf(directory, "site.pem", ca.issue_cert("new.example.com"))
        service.reload(proxy)
        yield service.reloaded()
        self.assertEqual(self.port(service), port)
        client = yield connect_tls(port, ClientHello())
        self.assertEqual(names(client.certificate), ["new.example.com"])
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_services_added_and_removed(self) -> Deferred[None]:
        """
        A service factory a reload adds has its service started; one it
        keeps (an equal one) keeps its service; one it drops has it stopped.
        """
        a = self.origin(b"a")
        listeners = [config.HTTPListener(LOCAL, [config.Route(self.pool("a", a))])]
        first, second = Recorded("first"), Recorded("second")
        service = self.start(config.Proxy(listeners, services=[first]))
        [first_service] = first.made
        service.reload(config.Proxy(listeners, services=[Recorded("first"), second]))
        yield service.reloaded()
        [second_service] = second.made
        self.assertTrue(first_service.running)
        self.assertTrue(second_service.running)
        service.reload(config.Proxy(listeners, services=[second]))
        yield service.reloaded()
        self.assertFalse(first_service.running)
        self.assertIsNone(first_service.parent)
        self.assertTrue(second_service.running)
        self.assertEqual([made for _, made in service.extra_services], [second_service])

    @inlineCallbacks
    def test_admin_removed(self) -> Deferred[None]:
        """
        A reload that removes the admin endpoint stops its listener.
        """
        a = self.origin(b"a")
        listeners = [config.HTTPListener(LOCAL, [config.Route(self.pool("a", a))])]
        service = self.start(config.Proxy(listeners, admin=config.Admin(OTHER)))
        assert service.admin is not None and service.admin.port is not None
        port = service.admin.port.getHost().port
        service.reload(config.Proxy(listeners))
        yield service.reloaded()
        self.assertIsNone(service.admin)
        yield self.assertFailure(connect_raw(port), ConnectionRefusedError)

    @inlineCallbacks
    def test_admin_added_and_token_changed(self) -> Deferred[None]:
        """
        A reload that adds the admin endpoint starts it, and one that only
        changes its token keeps its socket and asks for the new token.
        """
        a = self.origin(b"a")
        listeners = [config.HTTPListener(LOCAL, [config.Route(self.pool("a", a))])]
        service = self.start(config.Proxy(listeners))
        service.reload(config.Proxy(listeners, admin=config.Admin(OTHER, token="one")))
        yield service.reloaded()
        assert service.admin is not None and service.admin.port is not None
        port = service.admin.port
        service.reload(config.Proxy(listeners, admin=config.Admin(OTHER, token="two")))
        yield service.reloaded()
        self.assertIs(service.admin.port, port)
        for token, status in [(b"one", 401), (b"two", 200)]:
            client: RawClient = yield connect_raw(port.getHost().port)
            client.transport.write(
                b"GET /pools HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
                b"Connection: close\r\n\r\n" % (token,)
            )
            data = yield client.closed
            self.assertEqual(split_response(data)[0], status, token)

    def test_unusable_file_refused(self) -> None:
        """
        A new configuration naming a TLS file that cannot be used is refused
        before anything changes.
        """
        pool = self.pool("a", "127.0.0.1:1")
        proxy = config.Proxy([config.HTTPListener(LOCAL, [config.Route(pool)])])
        service = makeService(proxy, reactor)
        missing = self.mktemp()
        bad = config.Proxy(
            [
                config.HTTPListener(LOCAL, [config.Route(pool)]),
                config.HTTPListener(
                    OTHER, [config.Route(pool)], tls=config.TLS(certificates=[missing])
                ),
            ]
        )
        refused = self.assertRaises(ReloadRefused, service.reload, bad)
        self.assertEqual(len(refused.errors), 1)
        self.assertIn(missing, refused.errors[0])
        self.assertIs(service.proxy, proxy)
        self.assertEqual(len(service.listeners), 1)


class GracefulStopTests(TestCase):
    """
    L{ProxyService.stopService} lets connections finish, within
    C{Proxy(drain_timeout=)}.
    """

    def start(self, drain_timeout: float = 30.0) -> tuple[ProxyService, GateFactory, int]:
        origin = GateFactory(b"slow", hold=True)
        listening = reactor.listenTCP(0, origin, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        address = f"127.0.0.1:{listening.getHost().port}"
        pool = config.Pool("web", servers=[config.Server(address)])
        service = makeService(
            config.Proxy(
                [config.HTTPListener(LOCAL, [config.Route(pool)])], drain_timeout=drain_timeout
            ),
            reactor,
        )
        service.startService()
        port = service.listeners[0].port
        assert port is not None
        return service, origin, port.getHost().port

    @inlineCallbacks
    def test_in_flight_request_finishes(self) -> Deferred[None]:
        """
        On stop, the listener stops accepting and an idle kept-alive
        connection closes at once, while a request in flight is answered,
        its connection then closed; the stop is done once it is gone.
        """
        service, origin, port = self.start()
        idle: RawClient = yield connect_raw(port)
        origin.hold = False
        idle.transport.write(request())
        yield idle.wait_for(b"slow")
        origin.hold = True
        busy: RawClient = yield connect_raw(port)
        busy.transport.write(request())
        held: Gate = yield origin.held.get()

        stopped = service.stopService()
        yield idle.closed
        self.assertFalse(stopped.called)
        yield self.assertFailure(connect_raw(port), ConnectionRefusedError)
        held.answer()
        data = yield busy.closed
        self.assertEqual(split_response(data)[0], 200)
        self.assertTrue(data.endswith(b"slow"))
        yield stopped

    @inlineCallbacks
    def test_drain_timeout_cuts(self) -> Deferred[None]:
        """
        A request still in flight after C{drain_timeout} is cut, and the stop
        is done then.
        """
        service, origin, port = self.start(drain_timeout=0.2)
        busy: RawClient = yield connect_raw(port)
        busy.transport.write(request())
        held: Gate = yield origin.held.get()
        stopped = service.stopService()
        data = yield busy.closed
        self.assertEqual(data, b"")
        yield stopped
        yield held.closed

    @inlineCallbacks
    def test_relay_finishes(self) -> Deferred[None]:
        """
        On stop, an open TCP relay goes on until its client closes it, and
        the stop is done then.
        """
        factory = Factory.forProtocol(Greeter)
        factory.name = b"tcp"
        factory.noisy = False
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        pool = config.Pool("db", servers=[config.Server(f"127.0.0.1:{listening.getHost().port}")])
        service = makeService(config.Proxy([config.TCPListener(LOCAL, pool=pool)]), reactor)
        service.startService()
        port = service.listeners[0].port
        assert port is not None
        client: RawClient = yield TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port
        ).connect(Factory.forProtocol(RawClient))
        yield client.wait_for(b"tcp\n")
        stopped = service.stopService()
        client.transport.write(b"echo\n")
        yield client.wait_for(b"echo\n")
        self.assertFalse(stopped.called)
        client.transport.loseConnection()
        yield stopped


class FactoryConfigureTests(SynchronousTestCase):
    """
    The factories take a listener's new settings in place, and close their
    connections gracefully.
    """

    def test_http_routes_replaced(self) -> None:
        """
        L{HTTPFactory.configure} routes the next request of an open
        connection by the new routes.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        listener.accept().respond(OK)
        pool = config.Pool("web", servers=[config.Server("10.0.0.1:80")])
        listener.factory.configure(
            config.HTTPListener("tcp:0", routes=[config.Route(pool, path="/elsewhere/")])
        )
        client.send(GET)
        self.assertIn(b"HTTP/1.1 404 ", client.received())
        listener.assert_closed_cleanly()

    def test_http_close_after_response(self) -> None:
        """
        L{HTTPFactory.close_connections} closes an idle connection at once
        and one with a request in flight once its response is written.
        """
        listener = MemoryListener(self)
        idle, busy = listener.connect(), listener.connect()
        busy.send(GET)
        closed = listener.factory.close_connections()
        self.assertTrue(idle.transport.disconnecting)
        self.assertFalse(busy.transport.disconnecting)
        idle.close()
        upstream = listener.accept()
        upstream.respond(OK)
        self.assertIn(b"hello", busy.received())
        self.assertTrue(busy.transport.disconnecting)
        self.assertFalse(closed.called)
        busy.close()
        self.assertIsNone(self.successResultOf(closed))
        listener.assert_closed_cleanly()

    def test_relay_configure(self) -> None:
        """
        L{RelayFactory.configure} switches the relay kind with the SNI routes
        and takes the new pool and timeouts; bad settings change nothing.
        """
        clock = MemoryReactorClock()
        first = Pool("first", [ServerState("10.0.0.1:1")], RoundRobin())
        second = Pool("second", [ServerState("10.0.0.2:1")], RoundRobin())
        factory = RelayFactory(first, clock, connect_timeout=1.0, idle_timeout=2.0, retries=0)
        self.assertIs(factory.protocol, Relay)
        routes = SNIRoutes([("a.example.com", RelayTarget(second, 1))])
        factory.configure(second, 3.0, 4.0, 2, sni_routes=routes, hello_timeout=5.0)
        self.assertIs(factory.protocol, SNIRelay)
        assert factory.default is not None
        self.assertIs(factory.default.pool, second)
        self.assertEqual((factory.connect_timeout, factory.idle_timeout), (3.0, 4.0))
        self.assertRaises(ValueError, factory.configure, None, 1.0, 1.0, 0)
        self.assertIs(factory.default.pool, second)

    def test_relay_close_and_abort(self) -> None:
        """
        L{RelayFactory.close_connections} leaves a relay open;
        L{RelayFactory.abort_connections} cuts it.
        """
        clock = MemoryReactorClock()
        pool = Pool("db", [ServerState("10.0.0.1:1")], RoundRobin())
        factory = RelayFactory(pool, clock, connect_timeout=1.0, idle_timeout=2.0, retries=0)
        relay = factory.buildProtocol(None)
        transport = StringTransport()
        relay.makeConnection(transport)
        closed = factory.close_connections()
        self.assertFalse(transport.disconnecting)
        factory.abort_connections()
        self.assertTrue(transport.disconnected)
        relay.connectionLost(Failure(ConnectionRefusedError()))
        self.assertIsNone(self.successResultOf(closed))


class PoolReloadTests(SynchronousTestCase):
    """
    What a reload changes of pools: their settings, idle upstream
    connections, and health checks.
    """

    def test_slow_start_turned_off(self) -> None:
        """
        L{Pool.configure} without slow start ends every ramp at full weight
        and leaves no timer; the new balancer and queue take over.
        """
        clock = Clock()
        pool = Pool("web", [], RoundRobin(), slow_start=10.0, clock=clock)
        server = ServerState("10.0.0.1:80", weight=2)
        pool.add(server)
        self.assertLess(server.weight, server.full_weight)
        balancer = RoundRobin()
        pool.configure(balancer=balancer, queue_size=3, queue_timeout=1.0, slow_start=0.0)
        self.assertEqual(server.weight, server.full_weight)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIs(pool.balancer, balancer)
        self.assertEqual((pool.queue_size, pool.queue_timeout), (3, 1.0))

    def upstream(self, idle: IdleUpstreams, server: ServerState) -> UpstreamProtocol:
        upstream = UpstreamProtocol(server, idle)
        upstream.makeConnection(StringTransport())
        return upstream

    def test_idle_connections_of_leaving_server(self) -> None:
        """
        A connection to a draining server, or one made with the TLS a reload
        replaced, is closed rather than kept; L{IdleUpstreams.drop} closes a
        server's idle ones.
        """
        clock = MemoryReactorClock()
        idle = IdleUpstreams(clock, clock, 4, 4.0)
        server = ServerState("10.0.0.1:80")
        kept = self.upstream(idle, server)
        idle.put(kept)
        self.assertEqual(idle.count(server), 1)
        stale = self.upstream(idle, server)
        server.tls = object()  # type: ignore[assignment]
        idle.put(stale)
        self.assertTrue(stale.transport.disconnecting)
        idle.drop(server.address)
        self.assertTrue(kept.transport.disconnecting)
        self.assertEqual(idle.count(server), 0)
        server.tls = None
        server.status = ServerStatus.DRAINING
        leaving = self.upstream(idle, server)
        idle.put(leaving)
        self.assertTrue(leaving.transport.disconnecting)
        self.assertEqual(idle.count(server), 0)

    def test_idle_configure(self) -> None:
        """
        L{IdleUpstreams.configure} closes the connections past the new
        C{max_idle}, the oldest first.
        """
        clock = MemoryReactorClock()
        idle = IdleUpstreams(clock, clock, 4, 4.0)
        server = ServerState("10.0.0.1:80")
        upstreams = [self.upstream(idle, server) for _ in range(3)]
        for upstream in upstreams:
            idle.put(upstream)
        idle.configure(1, 2.0)
        self.assertEqual(
            [upstream.transport.disconnecting for upstream in upstreams], [True, True, False]
        )
        self.assertEqual((idle.max_idle, idle.idle_timeout), (1, 2.0))
        idle.close()

    def test_health_replace(self) -> None:
        """
        L{HealthService.replace} starts a checker for new settings while
        running; settings without checks bring a server marked down back up;
        L{HealthService.remove} stops a pool's checker.
        """
        clock = MemoryReactorClock()
        settings = config.Pool("web", servers=[config.Server("10.0.0.1:80")], passive=None)
        pool = build_pool(settings)
        health = HealthService([settings], {"web": pool}, clock, random=lambda: 0.5)
        health.startService()
        self.assertEqual(health.checkers, {})
        checked = config.Pool(
            "web", servers=[config.Server("10.0.0.1:80")], health=config.HealthCheck()
        )
        health.replace(checked, pool)
        self.assertTrue(health.checkers["web"].running)
        pool.mark_down("10.0.0.1:80", "test")
        health.replace(settings, pool)
        self.assertEqual(health.checkers, {})
        self.assertIs(pool.server("10.0.0.1:80").status, ServerStatus.UP)
        health.replace(checked, pool)
        health.remove("web")
        self.assertEqual(health.checkers, {})
        health.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])


class ServerTLSConfigureTests(SynchronousTestCase):
    """
    L{ServerTLS.configure} takes a kept listener's new TLS settings.
    """

    def test_configure(self) -> None:
        """
        New settings are taken with their files; settings whose files cannot
        be used are refused and the ones in use stay.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        ca = trustme.CA()
        first = write_leaf(directory, "a.pem", ca.issue_cert("a.example.com"))
        second = write_leaf(directory, "b.pem", ca.issue_cert("b.example.com"))
        tls = ServerTLS(config.TLS(certificates=[first]))
        settings = config.TLS(certificates=[second], min_version="TLSv1.3")
        self.assertTrue(tls.configure(settings, (b"http/1.1",)))
        self.assertIs(tls.settings, settings)
        self.assertEqual([pair.names for pair in tls.key_pairs], [("b.example.com",)])
        bad = config.TLS(certificates=[os.path.join(directory, "missing.pem")])
        self.assertFalse(tls.configure(bad))
        self.assertIs(tls.settings, settings)
