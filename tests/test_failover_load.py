"""
Failover under load, over real loopback sockets: a pool of three origins
serves a steady stream of kept-alive GETs while one origin is killed, one is
added and one removed through the admin API, and the configuration is
reloaded three times (twice in place, once from its file as C{SIGHUP}
does). Not one GET may fail, and the log tells what happened, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.loopback import RawClient, connect_raw, split_response
from txproxy import config
from txproxy.pool import ServerStatus
from txproxy.service import ProxyService, makeService
from txproxy.tap import FileReload

LISTEN = "tcp:0:interface=127.0.0.1"
ADMIN = "tcp:port=0:interface=127.0.0.1"
RELAY = "tcp:0:backlog=50:interface=127.0.0.1"

CLIENTS = 10
"""
Kept-alive client connections, each sending its next GET once the last is answered.
"""

TOTAL = 2000
"""
GETs sent in all.
"""

STEP = 150
"""
GETs answered between one event of the scenario and the next.
"""

CONFIG_FILE = """\
from txproxy.config import Admin, HealthCheck, HTTPListener, Pool, Proxy, Route, Server

web = Pool(
    "web",
    servers=[{servers}],
    health=HealthCheck(path="/healthz", interval=0.1, timeout=1.0, rise=1, fall=1),
    retries=3,
)
proxy = Proxy(
    listeners=[
        HTTPListener(
            "{listen}", routes=[Route(web, set_response_headers=[("X-Config", "{version}")])]
        )
    ],
    admin=Admin("{admin}"),
)
"""
"""
The configuration file L{web_proxy} describes, for the reload from a file.
"""


def web_proxy(servers: list[tuple[str, int]], version: str) -> config.Proxy:
    """
    One HTTP listener routing everything to the pool C{web}, checked every
    0.1 s, with the admin API: the configuration the scenario runs.

    @param servers: the pool's servers, as C{(address, weight)}.
    @param version: the value of the C{X-Config} header set on every response.
    """
    web = config.Pool(
        "web",
        servers=[config.Server(address, weight=weight) for address, weight in servers],
        health=config.HealthCheck(path="/healthz", interval=0.1, timeout=1.0, rise=1, fall=1),
        retries=3,
    )
    return config.Proxy(
        listeners=[
            config.HTTPListener(
                LISTEN, routes=[config.Route(web, set_response_headers=[("X-Config", version)])]
            )
        ],
        admin=config.Admin(ADMIN),
    )


def web_proxy_source(servers: list[tuple[str, int]], version: str) -> str:
    """
    The text of a configuration file defining what L{web_proxy} returns.
    """
    listed = ", ".join(f'Server("{address}", weight={weight})' for address, weight in servers)
    return CONFIG_FILE.format(servers=listed, listen=LISTEN, admin=ADMIN, version=version)


class Page(Resource):
    """
    Answers every request with its origin's name, counting them; health
    checks (C{/healthz}) are counted apart.
    """

    isLeaf = True

    def __init__(self, origin: Origin) -> None:
        super().__init__()
        self.origin = origin

    def render(self, request: Request) -> bytes:
        if request.path == b"/healthz":
            self.origin.checks += 1
        else:
            self.origin.requests += 1
        return self.origin.name


class _TrackedChannel(HTTPChannel):
    """
    An origin's connection, known to its site while open so that the origin
    can be killed.
    """

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:
        self.site.channels.discard(self)
        super().connectionLost(reason)


class _OriginSite(Site):
    """
    An origin's site, which knows its open connections (C{channels}).
    """

    protocol = _TrackedChannel

    def buildProtocol(self, addr: object) -> _TrackedChannel:
        channel = super().buildProtocol(addr)
        channel.site = self
        return channel


class Origin:
    """
    A small twisted.web origin on a free loopback port, which can be killed.

    @ivar name: its response body.
    @ivar requests: requests it answered, health checks apart.
    @ivar checks: health checks it answered.
    """

    def __init__(self, test_case: TestCase, name: bytes) -> None:
        self.name = name
        self.requests = 0
        self.checks = 0
        self.site = _OriginSite(Page(self))
        self.site.noisy = False
        self.site.channels = set()
        self.site.log = lambda request: None
        self.port: IListeningPort | None = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"
        test_case.addCleanup(self.kill)

    def kill(self) -> Deferred[None] | None:
        """
        Die as a killed process does: stop listening and cut every open
        connection, without a word.
        """
        port, self.port = self.port, None
        for channel in list(self.site.channels):
            channel.transport.abortConnection()
        return None if port is None else port.stopListening()


class LoadClient(Protocol):
    """
    One kept-alive client connection of a L{Load}: sends a GET, reads its
    response, sends the next, while the load has GETs left.
    """

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = b""
        self.finished = False

    def connectionMade(self) -> None:
        self.ask()

    def ask(self) -> None:
        if self.load.take():
            self.transport.write(b"GET /page HTTP/1.1\r\nHost: web\r\n\r\n")
        else:
            self.finished = True
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            status, headers, _ = split_response(head + b"\r\n\r\n")
            length = int(headers.get(b"content-length", [b"-1"])[0])
            if length < 0:
                self.load.failed(f"a response without Content-Length: {head!r}")
                self.transport.abortConnection()
                return
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.load.answered(status, headers.get(b"x-config", [b""])[0], rest[:length])
            self.ask()

    def connectionLost(self, reason: Failure) -> None:
        if not self.finished:
            self.load.failed(f"connection lost: {reason.getErrorMessage()}")
        self.load.closed()


class Load:
    """
    A bounded stream of GETs over C{clients} kept-alive connections.

    @ivar answers: each response, in the order they came: C{(status,
        X-Config header, body)}.
    @ivar errors: every connection refused, reset or closed early, and
        every malformed response.
    @ivar done: fires once every connection has closed.
    """

    def __init__(self, port: int, clients: int, total: int) -> None:
        self.port = port
        self.clients = clients
        self.total = total
        self.sent = 0
        self.open = 0
        self.answers: list[tuple[int, bytes, bytes]] = []
        self.errors: list[str] = []
        self.done: Deferred[None] = Deferred()

    def start(self) -> None:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        for _ in range(self.clients):
            self.open += 1
            connecting = endpoint.connect(Factory.forProtocol(lambda: LoadClient(self)))
            connecting.addErrback(self._refused)

    def _refused(self, reason: Failure) -> None:
        self.failed(f"connect failed: {reason.getErrorMessage()}")
        self.closed()

    def take(self) -> bool:
        """
        Count one more GET sent, if the load has one left.
        """
        if self.sent >= self.total:
            return False
        self.sent += 1
        return True

    def answered(self, status: int, version: bytes, body: bytes) -> None:
        self.answers.append((status, version, body))

    def failed(self, error: str) -> None:
        self.errors.append(error)

    def closed(self) -> None:
        self.open -= 1
        if not self.open:
            self.done.callback(None)

    def bodies_since(self, index: int) -> set[bytes]:
        """
        The origins that answered from the C{index}th response on.
        """
        return {body for _, _, body in self.answers[index:]}


@inlineCallbacks
def until(
    condition: Callable[[], object], what: str, timeout: float = 5.0
) -> Generator[Deferred[None], None, None]:
    """
    Wait, looking every 10 ms, until C{condition()} is true.

    @raise AssertionError: after C{timeout} seconds, naming C{what}.
    """
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting, after {timeout:g}s, for {what}")
        yield deferLater(reactor, 0.01, lambda: None)


class FailoverUnderLoadTests(TestCase):
    """
    Issue 6's proof under load: a pool keeps answering every request while
    its servers come and go and its configuration is reloaded.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def start(self, proxy: config.Proxy) -> ProxyService:
        service = makeService(proxy, reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        return service

    @inlineCallbacks
    def admin(
        self, service: ProxyService, method: bytes, path: str, body: object = None
    ) -> Generator[Deferred[object], object, tuple[int, object]]:
        """
        One request to the admin API over a real connection: its status and JSON.
        """
        assert service.admin is not None and service.admin.port is not None
        client = yield connect_raw(service.admin.port.getHost().port)
        assert isinstance(client, RawClient)
        content = b"" if body is None else json.dumps(body).encode()
        client.transport.write(
            b"%s %s HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (method, path.encode(), len(content), content)
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        status, _, document = split_response(data)
        return status, json.loads(document)

    @inlineCallbacks
    def test_no_request_fails(self) -> Generator[Deferred[object], object, None]:
        """
        While 10 clients send 2000 kept-alive GETs back to back, origin 1 is
        killed, origin 4 is added and origin 2 drained and removed through
        the admin API, and the configuration is reloaded twice in place and
        once from its file: every GET is answered 200, no client connection
        is refused or cut, each origin serves while it is in the pool and
        not after, and the log tells each change in order.
        """
        one, two, three, four = (Origin(self, b"o%d" % (n,)) for n in range(1, 5))
        servers = [(one.address, 1), (two.address, 1), (three.address, 1)]
        service = self.start(web_proxy(servers, "one"))
        pool = service.pools["web"]
        assert service.listeners[0].port is not None
        load = Load(service.listeners[0].port.getHost().port, CLIENTS, TOTAL)
        load.start()
        timeline: list[tuple[int, str]] = []

        def mark(event: str) -> None:
            timeline.append((len(load.answers), event))

        def answered(count: int) -> Callable[[], bool]:
            return lambda: len(load.answers) >= count

        yield until(answered(STEP), f"{STEP} answers")
        self.assertEqual(load.bodies_since(0), {b"o1", b"o2", b"o3"})

        mark("origin 1 killed")
        yield one.kill()
        yield until(
            lambda: pool.server(one.address).status is ServerStatus.DOWN, "origin 1 marked down"
        )
        mark("origin 1 down")

        yield until(answered(len(load.answers) + STEP), "answers after origin 1 went down")
        mark("origin 4 added")
        status, added = yield self.admin(
            service, b"POST", "/pools/web/servers", {"address": four.address}
        )
        self.assertEqual(status, 201, added)
        yield until(lambda: four.requests > 0, "origin 4's first request")
        mark("origin 4 served")

        yield until(answered(len(load.answers) + STEP), "answers after origin 4 was added")
        mark("origin 2 removed")
        status, removing = yield self.admin(service, b"DELETE", f"/pools/web/servers/{two.address}")
        self.assertEqual(status, 202, removing)
        yield until(
            lambda: two.address not in {server.address for server in pool.servers},
            "origin 2 out of the pool",
        )
        mark("origin 2 out")
        two_served = two.requests
        two_out = len(load.answers)

        yield until(answered(len(load.answers) + STEP), "answers after origin 2 left")
        # Until the reload, origin 2 serves nothing: only responses it sent
        # before it left may still be on their way, one on each connection.
        self.assertEqual(two.requests, two_served, "origin 2 served after it left the pool")
        late = [body for _, _, body in load.answers[two_out:] if body == b"o2"]
        self.assertLessEqual(len(late), CLIENTS)
        mark("reload: X-Config two")
        # A reload starts again from the file: origin 2 comes back, and
        # origin 4, which only the admin API added, drains out.
        service.reload(web_proxy(servers, "two"))
        yield service.reloaded()
        self.assertIn(two.address, {server.address for server in pool.servers})
        reloaded = len(load.answers)
        yield until(
            lambda: any(version == b"two" for _, version, _ in load.answers[reloaded:]),
            "a response with the reloaded header",
        )

        yield until(answered(len(load.answers) + STEP), "answers after the first reload")
        mark("reload: origins 2 and 3 weight 2")
        service.reload(web_proxy([(one.address, 1), (two.address, 2), (three.address, 2)], "two"))
        yield service.reloaded()
        self.assertEqual(pool.server(three.address).configured_weight, 2)
        self.assertEqual(pool.server(two.address).configured_weight, 2)

        yield until(answered(len(load.answers) + STEP), "answers after the second reload")
        mark("reload from the file: origins 3 and 4, X-Config three")
        path = Path(self.mktemp())
        path.write_text(web_proxy_source([(three.address, 2), (four.address, 1)], "three"))
        self.assertTrue(FileReload(str(path), service)())
        yield service.reloaded()
        file_reloaded = len(load.answers)
        # Origin 1 leaves once no exchange holds it: a connect to it may be failing now.
        yield until(
            lambda: [server.address for server in pool.servers] == [three.address, four.address],
            "origins 3 and 4 alone in the pool",
        )
        # Responses on their way when the pool settled: one on each connection at most.
        settled = len(load.answers) + CLIENTS
        self.assertLess(file_reloaded, TOTAL, "the load ended before the scenario did")

        yield load.done
        mark("load done")
        self.assertEqual(load.errors, [])
        self.assertEqual(len(load.answers), TOTAL)
        statuses = [status for status, _, _ in load.answers]
        self.assertEqual(
            {status: statuses.count(status) for status in statuses}, {200: TOTAL}, timeline
        )
        self.assertGreater(two.requests, two_served, "origin 2 served again after the reload")
        self.assertEqual(load.bodies_since(settled), {b"o3", b"o4"})
        self.assertGreater(four.requests, 0)
        self.assertEqual(
            {version for _, version, _ in load.answers[file_reloaded:]} - {b"two"}, {b"three"}
        )

        log = self.logged()
        expected = [
            f"server {one.address} of pool web is down",
            f"admin: server {four.address} added to pool web",
            f"admin: server {two.address} of pool web draining, to be removed",
            f"admin: server {two.address} removed from pool web, drained",
            # The first reload starts again from the file: 2 back, 4 out.
            f"reload: pool web: server {two.address} added",
            f"reload: pool web: server {four.address} removed (drains)",
            "reload: listener tcp:0:interface=127.0.0.1: routes changed",
            f"reload: pool web: server {two.address}: weight changed (in place)",
            f"reload: pool web: server {three.address}: weight changed (in place)",
            f"reloading {path}",
            f"reload: pool web: server {four.address} added",
            f"reload: pool web: server {one.address} removed (drains)",
            f"reload: pool web: server {two.address} removed (drains)",
        ]
        # Each line is logged after the one before it.
        after = -1
        for line in expected:
            later = [index for index, text in enumerate(log) if index > after and line in text]
            self.assertTrue(later, f"{line!r} not logged after line {after}; timeline {timeline}")
            after = later[0]
        self.assertEqual(
            [text for text in log if "could not be applied" in text or "reload refused" in text], []
        )


class Echo(Protocol):
    """
    A TCP origin that echoes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class RelayAcrossReloadsTests(TestCase):
    """
    A TCP listener keeps its open relays while reloads change the rest of
    the configuration.
    """

    @inlineCallbacks
    def test_relay_kept(self) -> Generator[Deferred[object], object, None]:
        """
        A relay opened before two reloads, one changing the HTTP listener's
        routes and one a pool's servers and the TCP listener's limits, still
        echoes on the same connection after each, and so does a new one.
        """
        echo = Factory.forProtocol(Echo)
        echo.noisy = False
        echoing = reactor.listenTCP(0, echo, interface="127.0.0.1")
        self.addCleanup(echoing.stopListening)
        web = Origin(self, b"web")
        other = Origin(self, b"other")
        db = config.Pool("db", servers=[config.Server(f"127.0.0.1:{echoing.getHost().port}")])

        def proxy(version: str, servers: list[Origin], idle: float = 60.0) -> config.Proxy:
            pool = config.Pool("web", servers=[config.Server(each.address) for each in servers])
            return config.Proxy(
                listeners=[
                    config.HTTPListener(
                        LISTEN,
                        routes=[config.Route(pool, set_response_headers=[("X-Config", version)])],
                    ),
                    config.TCPListener(
                        RELAY, pool=db, limits=config.Limits(client_idle_timeout=idle)
                    ),
                ]
            )

        service = makeService(proxy("one", [web]), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        relay_service = service.listeners[1]
        factory = relay_service.factory
        assert relay_service.port is not None
        port = relay_service.port.getHost().port
        client = yield connect_raw(port)
        assert isinstance(client, RawClient)
        client.transport.write(b"before\n")
        yield client.wait_for(b"before\n")

        for number, changed in enumerate(
            [proxy("two", [web]), proxy("two", [web, other], idle=30.0)], start=1
        ):
            service.reload(changed)
            yield service.reloaded()
            self.assertIs(service.listeners[1].factory, factory)
            self.assertEqual(service.listeners[1].port.getHost().port, port)
            line = b"after reload %d\n" % (number,)
            client.transport.write(line)
            yield client.wait_for(line)
        self.assertEqual(client.received, b"before\nafter reload 1\nafter reload 2\n")
        self.assertEqual(len(service.pools["web"].servers), 2)

        fresh = yield connect_raw(port)
        assert isinstance(fresh, RawClient)
        fresh.transport.write(b"new\n")
        yield fresh.wait_for(b"new\n")
        fresh.transport.loseConnection()
        yield fresh.closed
        client.transport.loseConnection()
        yield client.closed
