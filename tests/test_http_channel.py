"""
Tests for L{txproxy.http.channel} and L{txproxy.http.exchange}: an HTTP
listener's factory driven by string transports and a memory reactor.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import IProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txproxy import config
from txproxy.http.channel import ClientChannel
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.pool import Pool, ServerState
from txproxy.service import build_pool

CLIENT = IPv4Address("TCP", "192.0.2.1", 5000)
FIRST = "10.0.0.1:8080"
SECOND = "10.0.0.2:8080"

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
FORWARDED_GET = (
    b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 192.0.2.1\r\n"
    b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nVia: 1.1 txproxy\r\n\r\n"
)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
FORWARDED_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 txproxy\r\n\r\nhello"


def status_line(data: bytes) -> bytes:
    """
    The first line of what was written, without its CRLF.
    """
    return data.partition(b"\r\n")[0]


class Client:
    """
    One client connection to the listener: its channel and the transport it writes to.
    """

    def __init__(self, channel: ClientChannel, transport: StringTransport) -> None:
        self.channel = channel
        self.transport = transport
        self.lost = False

    def send(self, data: bytes) -> None:
        """
        Deliver bytes from the client, as the reactor would.
        """
        self.channel.dataReceived(data)

    def received(self) -> bytes:
        """
        Everything txproxy has written to the client so far.
        """
        return self.transport.value()

    def close(self) -> None:
        """
        The connection is gone, whoever closed it.
        """
        if not self.lost:
            self.lost = True
            self.channel.connectionLost(Failure(ConnectionDone()))


class Upstream:
    """
    One accepted upstream connection: the protocol the reactor drives (the
    endpoint's wrapper around the L{UpstreamProtocol}) and its transport.
    """

    def __init__(self, address: str, protocol: IProtocol, transport: StringTransport) -> None:
        self.address = address
        self.protocol = protocol
        self.transport = transport
        self.lost = False

    def respond(self, data: bytes) -> None:
        """
        Deliver bytes from the server, as the reactor would.
        """
        self.protocol.dataReceived(data)

    def sent(self) -> bytes:
        """
        Everything txproxy has written to the server so far.
        """
        return self.transport.value()

    @property
    def aborted(self) -> bool:
        """
        Whether txproxy aborted the connection rather than closing it cleanly.
        """
        return bool(self.transport.disconnected)

    def close(self) -> None:
        """
        The connection is gone, whoever closed it.
        """
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class MemoryListener:
    """
    An L{HTTPFactory} built as L{txproxy.service} builds it, over a
    L{MemoryReactorClock}, with the means to play its clients and servers.

    @ivar reactor: the memory reactor, also the clock.
    @ivar pool: the runtime pool C{web}.
    @ivar idle: the pool's idle upstream connections.
    @ivar factory: the listener's factory.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        *addresses: str,
        retries: int = 3,
        keepalive: int = 32,
        keepalive_timeout: float = 4.0,
        limits: config.Limits | None = None,
        path: str = "/",
        cache: config.Cache | None = None,
        compression: config.Compression | None = None,
        access_log: object = None,
        now: float = 0.0,
    ) -> None:
        """
        @param cache: the route's cache, if it caches.
        @param compression: the route's compression, if it compresses.
        @param access_log: what the factory logs requests to, if anything.
        @param now: the clock's time when the listener is built.
        """
        self._test = test
        self.reactor = MemoryReactorClock()
        self.reactor.advance(now)
        pool = self.settings = config.Pool(
            "web",
            servers=[config.Server(address) for address in addresses or (FIRST,)],
            retries=retries,
            keepalive=keepalive,
            keepalive_timeout=keepalive_timeout,
        )
        self.pool: Pool = build_pool(pool)
        self.idle = IdleUpstreams(
            self.reactor, self.reactor, pool.keepalive, pool.keepalive_timeout
        )
        self.route = config.Route(pool, path=path, cache=cache, compression=compression)
        listener = config.HTTPListener(
            "tcp:0", routes=[self.route], limits=limits or config.Limits()
        )
        self.factory = HTTPFactory(
            listener,
            {"web": self.pool},
            {"web": self.idle},
            self.reactor,
            access_log,  # type: ignore[arg-type]
        )
        self.clients: list[Client] = []
        self.upstreams: list[Upstream] = []

    def server(self, address: str = FIRST) -> ServerState:
        """
        The runtime state of the server at C{address}.
        """
        return self.pool.server(address)

    def connect(self) -> Client:
        """
        A new client connection from L{CLIENT}.
        """
        channel = self.factory.buildProtocol(CLIENT)
        assert isinstance(channel, ClientChannel)
        transport = StringTransport(peerAddress=CLIENT)
        channel.makeConnection(transport)
        client = Client(channel, transport)
        self.clients.append(client)
        return client

    def destination(self, index: int = -1) -> str:
        """
        The address upstream connection attempt number C{index} goes to.
        """
        host, port, _, _, _ = self.reactor.tcpClients[index]
        return f"{host}:{port}"

    def accept(self, index: int = -1) -> Upstream:
        """
        Let upstream connection attempt number C{index} succeed.
        """
        host, port, factory, _, _ = self.reactor.tcpClients[index]
        address = IPv4Address("TCP", host, port)
        protocol = factory.buildProtocol(address)
        assert protocol is not None
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        upstream = Upstream(f"{host}:{port}", protocol, transport)
        self.upstreams.append(upstream)
        return upstream

    def refuse(self, index: int = -1) -> None:
        """
        Let upstream connection attempt number C{index} be refused.
        """
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(
            self.reactor.connectors[index], Failure(ConnectionRefusedError())
        )

    def time_out(self, index: int = -1) -> None:
        """
        Let upstream connection attempt number C{index} time out: advance the
        clock by the timeout it was given, then fail it as the reactor's
        connector does then.
        """
        _, _, factory, timeout, _ = self.reactor.tcpClients[index]
        self.reactor.advance(timeout)
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(TimeoutError()))

    def timers(self) -> list[str]:
        """
        The kinds of object whose timers are pending, sorted: C{ClientChannel}
        for a client or response timeout (the channel keeps time for its exchange).
        """
        return sorted(
            type(getattr(call.func, "__self__", call.func)).__name__
            for call in self.reactor.getDelayedCalls()
        )

    def assert_closed_cleanly(self) -> None:
        """
        Close every client connection and idle upstream connection; then every
        upstream connection must have been closed by txproxy, and no timer be left.
        """
        for client in self.clients:
            client.transport.loseConnection()
            client.close()
        self.idle.close()
        for upstream in self.upstreams:
            self._test.assertTrue(
                upstream.lost or upstream.transport.disconnecting,
                f"upstream connection to {upstream.address} left open",
            )
            upstream.close()
        self._test.assertEqual(self.reactor.getDelayedCalls(), [])
        for server in self.pool.servers:
            self._test.assertEqual(server.active, 0, f"{server.address} still leased")


class ClientChannelTests(SynchronousTestCase):
    """
    Tests for L{ClientChannel} and L{Exchange}: requests in, through a pool, responses out.
    """

    def test_request_head_forwarded_byte_exact(self) -> None:
        """
        The request head reaches the server as HTTP/1.1 with the same method
        and target, X-Forwarded-* and Via added and hop-by-hop fields removed;
        the response reaches the client with its Content-Length framing.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(
            b"GET /a/b?c=1&d=2 HTTP/1.1\r\nHost: example.com\r\n"
            b"Connection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n"
            b"X-Secret: 1\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n"
            b"Accept: */*\r\nX-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\r\n"
        )
        self.assertEqual(listener.destination(), FIRST)
        upstream = listener.accept()
        self.assertEqual(
            upstream.sent(),
            b"GET /a/b?c=1&d=2 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n"
            b"X-Forwarded-For: 198.51.100.7, 192.0.2.1\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: example.com\r\nVia: 1.1 txproxy\r\n\r\n",
        )
        self.assertEqual(client.received(), b"")
        upstream.respond(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: secret/1.0\r\n"
            b"Keep-Alive: timeout=5\r\nContent-Type: text/plain\r\n\r\nhello"
        )
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
            b"Via: 1.1 txproxy\r\n\r\nhello",
        )
        self.assertFalse(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_producers_linked_both_ways_during_exchange(self) -> None:
        """
        While a response streams, a full upstream buffer pauses the client and a
        full client buffer pauses the server; both links are undone after the response.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        self.assertEqual(listener.timers(), ["ClientChannel"])
        self.assertIs(client.transport.producer, upstream.transport)
        self.assertTrue(client.transport.streaming)
        self.assertIs(upstream.transport.producer, client.channel.producer)
        self.assertTrue(upstream.transport.streaming)

        client.transport.producer.pauseProducing()
        self.assertEqual(upstream.transport.producerState, "paused")
        self.assertEqual(client.transport.producerState, "producing")
        client.transport.producer.resumeProducing()
        self.assertEqual(upstream.transport.producerState, "producing")

        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
        upstream.transport.producer.pauseProducing()
        self.assertEqual(client.transport.producerState, "paused")
        self.assertEqual(upstream.transport.producerState, "producing")

        upstream.respond(b"lo")
        self.assertEqual(client.received(), FORWARDED_OK)
        self.assertIsNone(client.transport.producer)
        self.assertIsNone(upstream.transport.producer)
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(upstream.transport.producerState, "producing")
        self.assertNotIn("Exchange", listener.timers())
        listener.assert_closed_cleanly()

    def test_refused_connection_tries_next_server(self) -> None:
        """
        When a server refuses the connection, the request goes to the next
        server, and the refusal counts against the first.
        """
        listener = MemoryListener(self, FIRST, SECOND)
        client = listener.connect()
        client.send(GET)
        self.assertEqual(listener.destination(), FIRST)
        listener.refuse()
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        self.assertEqual(listener.destination(), SECOND)
        upstream = listener.accept()
        self.assertEqual(upstream.sent(), FORWARDED_GET)
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        self.assertEqual(listener.server(FIRST).fails, 1)
        self.assertEqual(listener.server(SECOND).fails, 0)
        listener.assert_closed_cleanly()

    def test_every_server_refusing_gives_502(self) -> None:
        """
        When every server refuses, the client gets 502 and its connection stays open.
        """
        listener = MemoryListener(self, FIRST, SECOND)
        client = listener.connect()
        client.send(GET)
        listener.refuse()
        listener.refuse()
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 502 Bad Gateway")
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(listener.server(FIRST).active, 0)
        self.assertEqual(listener.server(SECOND).active, 0)
        listener.assert_closed_cleanly()

    def test_connect_timeout_on_last_try_gives_504(self) -> None:
        """
        A connection attempt still pending after C{upstream_connect_timeout},
        with no retry left, answers the client 504.
        """
        listener = MemoryListener(
            self, retries=0, limits=config.Limits(upstream_connect_timeout=2.0)
        )
        client = listener.connect()
        client.send(GET)
        [(_, _, _, timeout, _)] = listener.reactor.tcpClients
        self.assertEqual(timeout, 2.0)
        listener.time_out()
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 504 Gateway Timeout")
        self.assertFalse(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_connect_timeout_on_every_server_gives_504(self) -> None:
        """
        When every server of the pool times out before accepting, the client
        gets 504, even though retries were left when the pool ran out of servers.
        """
        listener = MemoryListener(
            self, FIRST, SECOND, limits=config.Limits(upstream_connect_timeout=2.0)
        )
        client = listener.connect()
        client.send(GET)
        listener.time_out()
        self.assertEqual(listener.destination(), SECOND)
        listener.time_out()
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 504 Gateway Timeout")
        listener.assert_closed_cleanly()

    def test_response_timeout_gives_504_and_aborts_upstream(self) -> None:
        """
        A server silent for C{upstream_response_timeout} after the request gets
        its connection aborted, not kept; the client gets 504 and may send
        another request on the same connection.
        """
        listener = MemoryListener(self, limits=config.Limits(upstream_response_timeout=10.0))
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        listener.reactor.advance(9.9)
        self.assertEqual(client.received(), b"")
        self.assertFalse(upstream.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 504 Gateway Timeout")
        self.assertTrue(upstream.aborted)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        self.assertEqual(listener.server().active, 0)
        self.assertEqual(listener.server().fails, 1)
        self.assertIsNone(client.transport.producer)
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(listener.timers(), ["ClientChannel"])
        upstream.close()

        client.transport.clear()
        client.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        listener.accept().respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_slow_request_body_does_not_time_out(self) -> None:
        """
        The response timeout counts from the last byte sent to or received from
        the server, so a request body that keeps coming, however long it takes
        in all, is not cut off with 504.
        """
        listener = MemoryListener(self, limits=config.Limits(upstream_response_timeout=10.0))
        client = listener.connect()
        client.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 30\r\n\r\n")
        upstream = listener.accept()
        for _ in range(3):
            listener.reactor.advance(6.0)
            client.send(b"x" * 10)
        self.assertEqual(client.received(), b"")
        self.assertTrue(upstream.sent().endswith(b"x" * 30))
        listener.reactor.advance(9.9)
        self.assertEqual(client.received(), b"")
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_partial_head_times_out_with_408(self) -> None:
        """
        A client that sends part of a head and no more within
        C{client_header_timeout} gets 408 and its connection closed.
        """
        listener = MemoryListener(self, limits=config.Limits(client_header_timeout=10.0))
        client = listener.connect()
        client.send(b"GET / HTTP/1.1\r\nHost: exa")
        listener.reactor.advance(9.9)
        self.assertEqual(client.received(), b"")
        listener.reactor.advance(0.1)
        received = client.received()
        self.assertEqual(status_line(received), b"HTTP/1.1 408 Request Timeout")
        self.assertIn(b"\r\nConnection: close\r\n", received)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(listener.reactor.tcpClients, [])
        listener.assert_closed_cleanly()

    def test_silent_connection_closed_at_header_timeout(self) -> None:
        """
        A connection on which nothing at all arrives is closed after
        C{client_header_timeout}, without a response.
        """
        listener = MemoryListener(self, limits=config.Limits(client_header_timeout=10.0))
        client = listener.connect()
        listener.reactor.advance(9.9)
        self.assertFalse(client.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.received(), b"")
        listener.assert_closed_cleanly()

    def test_idle_client_closed_without_response(self) -> None:
        """
        After a response, a client that sends nothing for
        C{client_idle_timeout} has its connection closed without another response.
        """
        listener = MemoryListener(
            self, limits=config.Limits(client_header_timeout=10.0, client_idle_timeout=30.0)
        )
        client = listener.connect()
        client.send(GET)
        listener.accept().respond(OK)
        listener.reactor.advance(29.9)
        self.assertFalse(client.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_idle_after_local_response_is_quiet(self) -> None:
        """
        After a response txproxy made itself (a 404), an idle keep-alive
        client is closed quietly at C{client_idle_timeout}, not answered 408 at
        C{client_header_timeout}: no byte of another request came.
        """
        listener = MemoryListener(
            self,
            limits=config.Limits(client_header_timeout=10.0, client_idle_timeout=30.0),
            path="/api/",
        )
        client = listener.connect()
        client.send(GET)
        answered = client.received()
        self.assertEqual(status_line(answered), b"HTTP/1.1 404 Not Found")
        listener.reactor.advance(29.9)
        self.assertFalse(client.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.received(), answered)

    def test_pipelined_request_waits_for_response(self) -> None:
        """
        Of two requests arriving together, the second is forwarded only after
        the first's response is complete; the client is paused meanwhile.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(
            b"GET /one HTTP/1.1\r\nHost: example.com\r\n\r\n"
            b"GET /two HTTP/1.1\r\nHost: example.com\r\n\r\n"
        )
        self.assertEqual(client.transport.producerState, "paused")
        upstream = listener.accept()
        self.assertTrue(upstream.sent().startswith(b"GET /one HTTP/1.1\r\n"))
        self.assertNotIn(b"/two", upstream.sent())
        self.assertEqual(client.transport.producerState, "paused")

        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        [_, second] = upstream.sent().split(b"\r\n\r\n", 1)
        self.assertTrue(second.startswith(b"GET /two HTTP/1.1\r\n"))

        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 txproxy\r\n\r\none"
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nVia: 1.1 txproxy\r\n\r\ntwo",
        )
        listener.assert_closed_cleanly()

    def test_early_request_body_held_until_connected(self) -> None:
        """
        Body bytes that arrive before a server accepts wait, with the client
        paused, and follow the head once it does.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(b"POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(client.transport.producerState, "paused")
        upstream = listener.accept()
        self.assertEqual(
            upstream.sent(),
            b"POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n"
            b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: example.com\r\nVia: 1.1 txproxy\r\n\r\nhello",
        )
        self.assertEqual(client.transport.producerState, "producing")
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_chunked_request_body_rechunked(self) -> None:
        """
        A chunked request body is sent upstream in chunks txproxy frames itself:
        one C{Transfer-Encoding: chunked}, no chunk extensions, no trailer fields.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(
            b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
        )
        upstream = listener.accept()
        client.send(b"6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
        self.assertEqual(
            upstream.sent(),
            b"POST /up HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 192.0.2.1\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n"
            b"Via: 1.1 txproxy\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_unframed_response_chunked_to_http11_client(self) -> None:
        """
        A response body that ends when the server closes reaches an HTTP/1.1
        client chunked, and the client connection stays open.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
        upstream.respond(b"defg")
        self.assertFalse(upstream.transport.disconnecting)
        upstream.close()
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nVia: 1.1 txproxy\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        self.assertEqual(listener.server().active, 0)
        self.assertEqual(listener.server().fails, 0)
        listener.assert_closed_cleanly()

    def test_unframed_response_raw_to_http10_client(self) -> None:
        """
        A response body that ends when the server closes reaches an HTTP/1.0
        client as it is, and the client connection closes after it.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(b"GET / HTTP/1.0\r\nHost: example.com\r\nConnection: keep-alive\r\n\r\n")
        upstream = listener.accept()
        self.assertTrue(upstream.sent().startswith(b"GET / HTTP/1.1\r\n"))
        upstream.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
        self.assertFalse(client.transport.disconnecting)
        upstream.close()
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nVia: 1.1 txproxy\r\nConnection: close\r\n\r\nabc",
        )
        self.assertTrue(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_unasked_protocol_switch_gives_502(self) -> None:
        """
        A C{101 Switching Protocols} to a request that did not ask to upgrade
        is a broken server: the client gets 502 and nothing is relayed.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        upstream = listener.accept()
        upstream.respond(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"
        )
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 502 Bad Gateway")
        self.assertTrue(upstream.aborted)

    def test_continue_passed_to_http11_client(self) -> None:
        """
        A server's C{100 Continue} reaches an HTTP/1.1 client that expects it,
        before the body is sent and before the final response.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(
            b"PUT /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        upstream = listener.accept()
        self.assertIn(b"\r\nExpect: 100-continue\r\n", upstream.sent())
        upstream.respond(b"HTTP/1.1 100 Continue\r\n\r\n")
        interim = b"HTTP/1.1 100 Continue\r\nVia: 1.1 txproxy\r\n\r\n"
        self.assertEqual(client.received(), interim)
        client.send(b"hello")
        self.assertTrue(upstream.sent().endswith(b"\r\n\r\nhello"))
        upstream.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(
            client.received(),
            interim + b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nVia: 1.1 txproxy\r\n\r\n",
        )
        listener.assert_closed_cleanly()

    def test_chunked_body_over_max_body_gives_413(self) -> None:
        """
        A chunked body that grows past C{max_body} gets 413 and the client
        connection closed; the upstream connection, which has part of the
        body, is aborted without counting against the server.
        """
        listener = MemoryListener(self, limits=config.Limits(max_body=10))
        client = listener.connect()
        client.send(
            b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n"
        )
        upstream = listener.accept()
        self.assertTrue(upstream.sent().endswith(b"\r\n\r\n8\r\n12345678\r\n"))
        client.send(b"8\r\nabcdefgh\r\n")
        received = client.received()
        self.assertEqual(status_line(received), b"HTTP/1.1 413 Content Too Large")
        self.assertIn(b"\r\nConnection: close\r\n", received)
        self.assertTrue(client.transport.disconnecting)
        self.assertNotIn(b"abcdefgh", upstream.sent())
        self.assertTrue(upstream.aborted)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        self.assertEqual(listener.server().active, 0)
        self.assertEqual(listener.server().fails, 0)
        listener.assert_closed_cleanly()

    def test_client_gone_mid_response_aborts_upstream(self) -> None:
        """
        When the client leaves during a response, the upstream connection is
        aborted rather than kept, and the server's lease is released.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        self.assertEqual(listener.server().active, 1)
        client.close()
        self.assertEqual(listener.timers(), [])
        self.assertTrue(upstream.aborted)
        self.assertIsNone(upstream.transport.producer)
        self.assertEqual(listener.server().active, 0)
        self.assertEqual(listener.server().fails, 0)
        upstream.close()
        self.assertEqual(listener.idle.count(listener.server()), 0)
        listener.assert_closed_cleanly()

    def test_client_gone_while_connecting_stops_attempt(self) -> None:
        """
        When the client leaves before a server accepts, the connection attempt
        is stopped and the server's lease released.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        self.assertEqual(listener.server().active, 1)
        client.close()
        [connector] = listener.reactor.connectors
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(listener.server().active, 0)
        self.assertEqual(listener.server().fails, 0)
        listener.assert_closed_cleanly()

    def test_held_body_sent_to_next_server(self) -> None:
        """
        Body bytes held while connecting go to the next server when the first
        refuses: none of them had reached a server.
        """
        listener = MemoryListener(self, FIRST, SECOND)
        client = listener.connect()
        client.send(b"POST /up HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello")
        listener.refuse()
        self.assertEqual(client.transport.producerState, "paused")
        upstream = listener.accept()
        self.assertEqual(upstream.address, SECOND)
        self.assertTrue(upstream.sent().startswith(b"POST /up HTTP/1.1\r\n"))
        self.assertTrue(upstream.sent().endswith(b"\r\n\r\nhello"))
        self.assertEqual(client.transport.producerState, "producing")
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        listener.assert_closed_cleanly()

    def test_declared_length_over_max_body_gives_413_without_connecting(self) -> None:
        """
        A C{Content-Length} over C{max_body} is answered 413 at once, with no
        server connected, and the connection closed.
        """
        listener = MemoryListener(self, limits=config.Limits(max_body=10))
        client = listener.connect()
        client.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\n")
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 413 Content Too Large")
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(listener.reactor.tcpClients, [])
        self.assertEqual(listener.server().total, 0)
        listener.assert_closed_cleanly()

    def test_continue_not_passed_to_http10_client(self) -> None:
        """
        An HTTP/1.0 client, which cannot read interim responses, gets only the
        final response.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n")
        upstream = listener.accept()
        upstream.respond(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(client.received(), b"")
        upstream.respond(OK)
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 txproxy\r\n"
            b"Connection: close\r\n\r\nhello",
        )
        self.assertTrue(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_truncated_response_body_cuts_client_off(self) -> None:
        """
        When the server closes before the body its C{Content-Length} promised,
        the client, which has the head already, is cut off, and the failure
        counts against the server.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        upstream.close()
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nVia: 1.1 txproxy\r\n\r\nhel",
        )
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(listener.server().fails, 1)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        listener.assert_closed_cleanly()

    def test_response_timeout_mid_body_cuts_client_off(self) -> None:
        """
        A server that stops sending in the middle of a body for
        C{upstream_response_timeout} has its connection aborted, and the
        client, which has the head already, is cut off.
        """
        listener = MemoryListener(self, limits=config.Limits(upstream_response_timeout=10.0))
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        listener.reactor.advance(9.0)
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel")
        listener.reactor.advance(9.9)
        self.assertFalse(client.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertTrue(upstream.aborted)
        self.assertTrue(client.transport.disconnecting)
        self.assertTrue(client.received().endswith(b"\r\n\r\nhel"))
        self.assertEqual(listener.server().active, 0)
        listener.assert_closed_cleanly()
