"""
Integration tests for the HTTP listener: real clients, txproxy and origins on loopback.
"""

from __future__ import annotations

import gzip
import json
import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.loopback import (
    Pump,
    RawClient,
    buffered,
    connect_raw,
    split_response,
    stalled,
    start_origin,
    start_proxy,
    start_raw_origin,
)
from txproxy import config
from txproxy.service import makeService


def description(data: bytes) -> dict[str, object]:
    """
    The JSON an L{tests.loopback.EchoPage} answered with, from a raw response.
    """
    _, _, body = split_response(data)
    return json.loads(body)


def header(described: dict[str, object], name: str) -> list[str]:
    """
    Every value of header C{name} the origin received.
    """
    return [value for key, value in described["headers"] if key.lower() == name.lower()]


class UntilClose(Protocol):
    """
    An origin answering each request with a body ended by closing.
    """

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")
            self.transport.loseConnection()


class Switching(Protocol):
    """
    An origin that accepts any upgrade and then echoes raw bytes.
    """

    upgraded = False

    def dataReceived(self, data: bytes) -> None:
        if self.upgraded:
            self.transport.write(b"echo:" + data)
            return
        if b"\r\n\r\n" in data:
            self.upgraded = True
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n"
            )


TOTAL = 64 * 1024 * 1024


class SlowSink(Protocol):
    """
    An origin that stops reading once a request starts, until told to go on;
    then it counts the body and answers 200.
    """

    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        self.head = b""
        self.count = -1

    def dataReceived(self, data: bytes) -> None:
        if self.count < 0:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.transport.pauseProducing()
            data = self.head.partition(b"\r\n\r\n")[2]
            self.count = 0
        self.count += len(data)
        if self.count == TOTAL:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


class Uploader(RawClient):
    """
    A client that sends one request with a L{TOTAL}-byte body as fast as the
    connection takes it.
    """

    def connectionMade(self) -> None:
        self.transport.write(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % TOTAL
        )
        self.pump = Pump(self.transport, TOTAL)


class HTTPProxyTests(TestCase):
    """
    An HTTP listener built by L{makeService} in front of loopback origins.
    """

    def proxy(
        self, *origins: IListeningPort, routes: list[config.Route] | None = None, **listener: object
    ) -> int:
        """
        Start a proxy over C{origins} (one pool, C{web}) and return its port.
        """
        self.pool = config.Pool(
            "web",
            servers=[config.Server(f"127.0.0.1:{port.getHost().port}") for port in origins],
            retries=1,
        )
        self.service, port = start_proxy(
            self,
            config.Proxy(
                listeners=[
                    config.HTTPListener(
                        "tcp:0:interface=127.0.0.1",
                        routes=routes if routes is not None else [config.Route(self.pool)],
                        **listener,
                    )
                ]
            ),
        )
        return port

    @inlineCallbacks
    def exchange(self, port: int, request: bytes, marker: bytes = b"") -> Deferred[bytes]:
        """
        Send raw C{request}; return what came back once the connection closed
        (or once C{marker} arrived, closing it then).
        """
        client: RawClient = yield connect_raw(port)
        client.transport.write(request)
        if marker:
            yield client.wait_for(marker)
            client.transport.loseConnection()
        received = yield client.closed
        return received

    @inlineCallbacks
    def test_get_forwarded(self) -> Deferred[None]:
        """
        A GET reaches the origin with X-Forwarded-* and Via added, and its
        answer comes back.
        """
        port = self.proxy(start_origin(self))
        data = yield self.exchange(
            port, b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        )
        status, headers, _ = split_response(data)
        self.assertEqual(status, 200)
        described = description(data)
        self.assertEqual(described["uri"], "/a?b=1")
        self.assertEqual(header(described, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(header(described, "x-forwarded-host"), ["example.com"])
        self.assertEqual(header(described, "x-forwarded-proto"), ["http"])
        self.assertEqual(header(described, "host"), ["example.com"])
        self.assertIn("1.1 txproxy", header(described, "via")[0])
        self.assertEqual(header(described, "connection"), [])

    @inlineCallbacks
    def test_backend_identity_hidden(self) -> Deferred[None]:
        """
        C{Server} and C{X-Powered-By} from the origin do not reach the client.
        """
        port = self.proxy(start_origin(self))
        data = yield self.exchange(
            port, b"GET /server HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        _, headers, _ = split_response(data)
        self.assertNotIn(b"x-powered-by", headers)
        self.assertNotIn(b"secret-backend/1.0", headers.get(b"server", []))

    @inlineCallbacks
    def test_keep_alive_both_sides(self) -> Deferred[None]:
        """
        Two requests on one client connection are answered in order, and the
        second reuses the first's upstream connection.
        """
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.write(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n")
        yield client.wait_for(b"}")
        client.transport.write(b"GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = yield client.closed
        first, second = data.split(b"HTTP/1.1 ")[1:]
        one, two = description(b"HTTP/1.1 " + first), description(b"HTTP/1.1 " + second)
        self.assertEqual((one["uri"], two["uri"]), ("/1", "/2"))
        self.assertEqual(one["connection"], two["connection"])

    @inlineCallbacks
    def test_pipelined_in_order(self) -> Deferred[None]:
        """
        Pipelined requests sent at once are answered in the order sent.
        """
        port = self.proxy(start_origin(self))
        requests = (
            b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % number for number in range(5))
            + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = yield self.exchange(port, requests)
        uris = [
            json.loads(part.rpartition(b"\r\n\r\n")[2])["uri"]
            for part in data.split(b"HTTP/1.1 ")[1:]
        ]
        self.assertEqual(uris, ["/0", "/1", "/2", "/3", "/4", "/last"])

    @inlineCallbacks
    def test_post_body_forwarded(self) -> Deferred[None]:
        """
        Request bodies framed by length and by chunks both reach the origin whole.
        """
        port = self.proxy(start_origin(self))
        data = yield self.exchange(
            port,
            b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
            b"hello world",
        )
        self.assertEqual(description(data)["body_length"], 11)
        data = yield self.exchange(
            port,
            b"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        self.assertEqual(description(data)["body_length"], 11)

    @inlineCallbacks
    def test_no_route_404(self) -> Deferred[None]:
        """
        A request no route matches gets txproxy's 404.
        """
        origin = start_origin(self)
        pool = config.Pool("web", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])
        port = self.proxy(origin, routes=[config.Route(pool, path="/api/")])
        data = yield self.exchange(
            port, b"GET /other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        status, _, body = split_response(data)
        self.assertEqual((status, body), (404, b"404 Not Found\n"))

    @inlineCallbacks
    def test_strip_prefix(self) -> Deferred[None]:
        """
        A route with C{strip_prefix} forwards the path without its prefix.
        """
        origin = start_origin(self)
        pool = config.Pool("web", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])
        port = self.proxy(origin, routes=[config.Route(pool, path="/api/", strip_prefix=True)])
        data = yield self.exchange(
            port, b"GET /api/users?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual(description(data)["uri"], "/users?x=1")

    @inlineCallbacks
    def test_path_normalised_before_routing(self) -> Deferred[None]:
        """
        Encoded letters, doubled slashes and dot-segments cannot slip a request
        past the route of its real path; the server gets the normalised path,
        and a path climbing above the root gets 400.
        """
        public, private = start_origin(self), start_origin(self)
        public_pool = config.Pool(
            "public", servers=[config.Server(f"127.0.0.1:{public.getHost().port}")]
        )
        private_pool = config.Pool(
            "private", servers=[config.Server(f"127.0.0.1:{private.getHost().port}")]
        )
        port = self.proxy(
            public,
            routes=[config.Route(private_pool, path="/admin/"), config.Route(public_pool)],
        )
        for target in (b"/%61dmin/x", b"//admin/x", b"/static/../admin/x"):
            data = yield self.exchange(
                port, b"GET %s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % target
            )
            self.assertEqual(description(data)["uri"], "/admin/x", target)
        self.assertEqual(self.service.pools["private"].servers[0].total, 3)
        data = yield self.exchange(port, b"GET /../x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(split_response(data)[0], 400)

    @inlineCallbacks
    def test_refused_server_skipped(self) -> Deferred[None]:
        """
        A server that refuses connections costs a retry on the next, not the request.
        """
        alive, dead = start_origin(self), start_origin(self)
        port = self.proxy(dead, alive)
        yield dead.stopListening()
        for _ in range(3):
            data = yield self.exchange(
                port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            self.assertEqual(split_response(data)[0], 200)

    @inlineCallbacks
    def test_every_server_dead_502(self) -> Deferred[None]:
        """
        When no server accepts, the client gets 502 without backend details.
        """
        dead = start_origin(self)
        port = self.proxy(dead)
        address = f"127.0.0.1:{dead.getHost().port}".encode()
        yield dead.stopListening()
        data = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"Gateway\n")
        self.assertEqual(split_response(data)[0], 502)
        self.assertNotIn(address, data)

    @inlineCallbacks
    def test_every_server_down_503(self) -> Deferred[None]:
        """
        When every server is marked down, the client gets 503 at once.
        """
        port = self.proxy(start_origin(self))
        for server in self.service.pools["web"].servers:
            self.service.pools["web"].mark_down(server.address)
        data = yield self.exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertEqual(split_response(data)[0], 503)

    @inlineCallbacks
    def test_queue_for_max_connections(self) -> Deferred[None]:
        """
        With its one server at C{max_connections}, a request waits in the
        pool's queue and is served once the slot frees; one more than the
        queue holds gets 503 at once.
        """
        origin = start_origin(self)
        pool = config.Pool(
            "web",
            servers=[config.Server(f"127.0.0.1:{origin.getHost().port}", max_connections=1)],
            queue_size=1,
            queue_timeout=30.0,
        )
        service = makeService(
            config.Proxy(
                listeners=[
                    config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[config.Route(pool)])
                ]
            ),
            reactor,
        )
        service.startService()
        self.addCleanup(service.stopService)
        assert service.listeners[0].port is not None
        port = service.listeners[0].port.getHost().port
        [server] = service.pools["web"].servers

        busy: RawClient = yield connect_raw(port)
        busy.transport.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        queued: RawClient = yield connect_raw(port)
        queued.transport.write(b"GET /q HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        while service.pools["web"].queued < 1:
            yield deferLater(reactor, 0, lambda: None)
        self.assertEqual(server.active, 1)
        refused = yield self.exchange(
            port, b"GET /r HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        self.assertEqual(split_response(refused)[0], 503)
        self.assertEqual(queued.received, b"")

        busy.transport.loseConnection()
        data = yield queued.closed
        self.assertEqual(split_response(data)[0], 200)
        self.assertEqual(description(data)["uri"], "/q")

    @inlineCallbacks
    def test_no_delay(self) -> Deferred[None]:
        """
        Client connections have Nagle's algorithm off, as nginx's
        C{tcp_nodelay}: a response never waits for an earlier write's ACK.
        """
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        yield client.wait_for(b"}")
        [channel] = self.service.listeners[0].factory.channels
        handle = channel.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_compression(self) -> Deferred[None]:
        """
        A route with compression sends a client that accepts gzip the body
        gzipped and chunked, with C{Vary: Accept-Encoding}; one that accepts
        nothing gets it as the server sent it.
        """
        origin = start_origin(self)
        pool = config.Pool("web", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])
        route = config.Route(pool, compression=config.Compression(min_length=0))
        port = self.proxy(origin, routes=[route])
        data = yield self.exchange(
            port,
            b"GET /a HTTP/1.1\r\nHost: a\r\nAccept-Encoding: br;q=0.5, gzip\r\n"
            b"Connection: close\r\n\r\n",
        )
        status, headers, rest = split_response(data)
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-encoding"], [b"gzip"])
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertIn(b"Accept-Encoding", b",".join(headers[b"vary"]))
        self.assertNotIn(b"content-length", headers)
        body = b""
        while True:
            size, _, rest = rest.partition(b"\r\n")
            length = int(size, 16)
            if length == 0:
                break
            body, rest = body + rest[:length], rest[length + 2 :]
        self.assertEqual(json.loads(gzip.decompress(body))["uri"], "/a")

        data = yield self.exchange(port, b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, rest = split_response(data)
        self.assertNotIn(b"content-encoding", headers)
        self.assertEqual(json.loads(rest)["uri"], "/a")

    @inlineCallbacks
    def test_bodiless_responses(self) -> Deferred[None]:
        """
        HEAD, 204 and 304 responses carry no body, and the connection goes on.
        """
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.write(
            b"HEAD /bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /bytes/3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = yield client.closed
        parts = data.split(b"HTTP/1.1 ")[1:]
        self.assertEqual([int(part[:3]) for part in parts], [200, 204, 304, 200])
        self.assertTrue(parts[0].endswith(b"\r\n\r\n"))
        self.assertIn(b"content-length: 100", parts[0].lower())
        self.assertTrue(parts[3].endswith(b"\r\n\r\nyyy"))

    @inlineCallbacks
    def test_until_close_rechunked(self) -> Deferred[None]:
        """
        A response whose end is the server closing reaches an HTTP/1.1 client
        chunked, and the client connection stays usable.
        """
        port = self.proxy(start_raw_origin(self, UntilClose))
        client: RawClient = yield connect_raw(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        data = yield client.wait_for(b"0\r\n\r\n")
        status, headers, body = split_response(data)
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertEqual(body, b"b\r\nuntil close\r\n0\r\n\r\n")
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_upgrade_relays_bytes(self) -> Deferred[None]:
        """
        After a 101 the connection relays raw bytes both ways.
        """
        port = self.proxy(start_raw_origin(self, Switching))
        client: RawClient = yield connect_raw(port)
        client.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        yield client.wait_for(b"\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 101 "))
        client.transport.write(b"ping")
        data = yield client.wait_for(b"echo:ping")
        self.assertTrue(data.endswith(b"echo:ping"))
        client.transport.loseConnection()
        yield client.closed

    @inlineCallbacks
    def test_response_timeout_504(self) -> Deferred[None]:
        """
        A server that does not answer within C{upstream_response_timeout} gets
        the client a 504.
        """
        port = self.proxy(start_origin(self), limits=config.Limits(upstream_response_timeout=0.2))
        data = yield self.exchange(port, b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", b"Timeout\n")
        self.assertEqual(split_response(data)[0], 504)

    @inlineCallbacks
    def test_body_too_large_413(self) -> Deferred[None]:
        """
        A body declared larger than C{max_body} gets 413 and the connection closes.
        """
        port = self.proxy(start_origin(self), limits=config.Limits(max_body=10))
        data = yield self.exchange(
            port, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello"
        )
        self.assertEqual(split_response(data)[0], 413)

    @inlineCallbacks
    def test_slow_client_bounds_memory(self) -> Deferred[None]:
        """
        A client that stops reading a large download stops the origin through
        the proxy, which holds little in memory; then every byte arrives.
        """
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.pauseProducing()
        client.transport.write(
            b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % TOTAL
        )
        [factory] = [listener.factory for listener in self.service.listeners]
        [channel] = factory.channels
        forwarded = yield stalled(lambda: channel._bytes_sent)
        self.assertLess(forwarded, TOTAL // 2)
        upstream = channel._exchange._upstream
        held = buffered(channel.transport) + buffered(upstream.transport)
        self.assertLess(held, 1024 * 1024)
        client.transport.resumeProducing()
        data = yield client.closed
        self.assertEqual(len(split_response(data)[2]), TOTAL)

    @inlineCallbacks
    def test_slow_origin_bounds_memory(self) -> Deferred[None]:
        """
        An origin that stops reading a large upload stops the client through
        the proxy, which holds little in memory; then every byte arrives.
        """
        origin = start_raw_origin(self, SlowSink)
        port = self.proxy(origin)
        client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Uploader)
        )
        sent = yield stalled(lambda: client.pump.sent)
        self.assertLess(sent, TOTAL // 2)
        [factory] = [listener.factory for listener in self.service.listeners]
        [channel] = factory.channels
        upstream = channel._exchange._upstream
        held = buffered(channel.transport) + buffered(upstream.transport)
        self.assertLess(held, 1024 * 1024)
        [sink] = origin.factory.connections
        sink.transport.resumeProducing()
        data = yield client.closed
        self.assertEqual(split_response(data)[0], 200)
        self.assertEqual(sink.count, TOTAL)

    @inlineCallbacks
    def test_expect_continue(self) -> Deferred[None]:
        """
        A client that waits for C{100 Continue} gets it from the origin through
        the proxy, then sends its body and gets the final response.
        """
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.write(
            b"PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = yield client.wait_for(b"\r\n\r\n")
        self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n"))
        client.transport.write(b"hello")
        data = yield client.closed
        final = data.partition(b"\r\n\r\n")[2]
        self.assertEqual(description(final)["body_length"], 5)

    @inlineCallbacks
    def test_oversized_heads(self) -> Deferred[None]:
        """
        Headers over C{max_header_size} get 431 and a URI over the target
        limit 414; both close the connection and reach no server.
        """
        port = self.proxy(start_origin(self), limits=config.Limits(max_header_size=12000))
        data = yield self.exchange(
            port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 13000 + b"\r\n\r\n"
        )
        self.assertEqual(split_response(data)[0], 431)
        data = yield self.exchange(port, b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(split_response(data)[0], 414)
        self.assertEqual(self.service.pools["web"].servers[0].total, 0)

    @inlineCallbacks
    def test_access_log(self) -> Deferred[None]:
        """
        Each request is logged in the combined format with upstream and time;
        so is a request too broken to read, as C{"-"} with its 400.
        """
        path = self.mktemp()
        origin = start_origin(self)
        port = self.proxy(origin, access_log=path)
        yield self.exchange(
            port,
            b"GET /logged HTTP/1.1\r\nHost: a\r\nUser-Agent: tester\r\nConnection: close\r\n\r\n",
        )
        yield self.exchange(port, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
        with open(path) as log:
            line, bad = log.read().splitlines()
        self.assertRegex(bad, r'^127\.0\.0\.1 - - \[.+\] "-" 400 0 "-" "-" upstream=- ')
        self.assertRegex(
            line,
            r'^127\.0\.0\.1 - - \[.+\] "GET /logged HTTP/1\.1" 200 \d+ "-" "tester" '
            rf"upstream=127\.0\.0\.1:{origin.getHost().port} time=\d+\.\d+ pool=web$",
        )

    @inlineCallbacks
    def test_http10_client(self) -> Deferred[None]:
        """
        An HTTP/1.0 client gets its response and the connection closes, as it
        did not ask to keep it alive.
        """
        port = self.proxy(start_origin(self))
        data = yield self.exchange(port, b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
        self.assertEqual(description(data)["uri"], "/old")

    @inlineCallbacks
    def test_http10_without_host(self) -> Deferred[None]:
        """
        An HTTP/1.0 request without Host reaches the server (as HTTP/1.1)
        with the server's address as Host, as nginx sends C{$proxy_host}.
        """
        origin = start_origin(self)
        port = self.proxy(origin)
        data = yield self.exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
        self.assertEqual(split_response(data)[0], 200)
        described = description(data)
        self.assertEqual(header(described, "Host"), [f"127.0.0.1:{origin.getHost().port}"])
        self.assertEqual(header(described, "X-Forwarded-Host"), [])

    @inlineCallbacks
    def test_large_download_streams(self) -> Deferred[None]:
        """
        A 32 MiB response passes through whole.
        """
        size = 32 * 1024 * 1024
        port = self.proxy(start_origin(self))
        client: RawClient = yield connect_raw(port)
        client.transport.write(
            b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % size
        )
        data = yield client.closed
        _, headers, body = split_response(data)
        self.assertEqual(len(body), size)


class StrictParsingTests(TestCase):
    """
    Ambiguous or malformed requests get 400 and a closed connection, over a
    raw socket, and never reach the origin.
    """

    CASES = {
        "content-length and transfer-encoding": (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        "differing content-lengths": (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        "bad chunk size": (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nhello\r\n0\r\n\r\n"
        ),
        "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        "bare CR": b"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
        "space before colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "bad header name": b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
        "missing host": b"GET / HTTP/1.1\r\n\r\n",
        "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    }

    @inlineCallbacks
    def test_each_case(self) -> Deferred[None]:
        """
        Each malformed request is answered 400 and closed; the origin sees
        nothing at all.
        """
        origin = start_origin(self)
        proxy = HTTPProxyTests()
        proxy.addCleanup = self.addCleanup  # type: ignore[method-assign]
        port = proxy.proxy(origin)
        for name, request in self.CASES.items():
            data = yield proxy.exchange(port, request)
            self.assertTrue(data.startswith(b"HTTP/1.1 400 "), f"{name}: {data!r}")
            self.assertIn(b"connection: close", data.lower(), name)
        web = proxy.service.pools["web"].servers[0]
        self.assertEqual(web.total, 0)
