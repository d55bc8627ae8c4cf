"""
Tests for L{txproxy.http.upstream}: upstream connections and the idle ones
kept alive for reuse, driven by string transports and a memory reactor.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_http_channel import (
    FORWARDED_GET,
    FORWARDED_OK,
    GET,
    OK,
    MemoryListener,
    status_line,
)
from txproxy.http.events import EndOfMessage, ResponseEvent, ResponseHead
from txproxy.http.upstream import SURPLUS_GRACE, IdleUpstreams, UpstreamProtocol
from txproxy.pool import ServerState


class RecordingSink:
    """
    A response sink that records what it is given.
    """

    def __init__(self) -> None:
        self.events: list[ResponseEvent] = []
        self.lost: list[UpstreamProtocol] = []

    def response_events(self, events: list[ResponseEvent]) -> None:
        self.events.extend(events)

    def upstream_lost(self, upstream: UpstreamProtocol, reason: Failure) -> None:
        self.lost.append(upstream)


class KeepAliveTests(SynchronousTestCase):
    """
    Tests for keeping upstream connections alive across the requests of a listener.
    """

    def test_connection_kept_and_reused(self) -> None:
        """
        After a response the upstream connection is kept idle, and the next
        request goes out on it rather than on a new connection.
        """
        listener = MemoryListener(self)
        server = listener.server()
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        self.assertEqual(listener.idle.count(server), 1)
        self.assertEqual(server.active, 0)
        self.assertFalse(upstream.transport.disconnecting)

        client.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        self.assertEqual(listener.idle.count(server), 0)
        self.assertEqual(server.active, 1)
        self.assertEqual(upstream.sent(), FORWARDED_GET * 2)
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        self.assertEqual(listener.idle.count(server), 1)
        listener.assert_closed_cleanly()

    def test_idle_connection_closed_after_idle_timeout(self) -> None:
        """
        An idle upstream connection is closed after the pool's
        C{keepalive_timeout}, is forgotten once closed, and the next request
        opens a new connection.
        """
        listener = MemoryListener(self, keepalive_timeout=3.0)
        server = listener.server()
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        listener.reactor.advance(2.9)
        self.assertFalse(upstream.transport.disconnecting)
        listener.reactor.advance(0.1)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertFalse(upstream.aborted)
        upstream.close()
        self.assertEqual(listener.idle.count(server), 0)

        client.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        listener.accept().respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        listener.assert_closed_cleanly()

    def test_expired_connection_not_reused_before_it_closes(self) -> None:
        """
        An idle connection whose C{keepalive_timeout} has passed is not handed
        out again, even before its close has completed: a request written to it
        could reach the server as the connection closes.
        """
        listener = MemoryListener(self, keepalive_timeout=3.0)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        listener.reactor.advance(3.0)
        self.assertTrue(upstream.transport.disconnecting)

        client.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(upstream.sent(), FORWARDED_GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        upstream.close()
        listener.accept().respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        listener.assert_closed_cleanly()

    def test_closed_idle_connection_forgotten(self) -> None:
        """
        An idle connection the server closes is forgotten, and the next
        request opens a new connection.
        """
        listener = MemoryListener(self)
        server = listener.server()
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        upstream.close()
        self.assertEqual(listener.idle.count(server), 0)
        self.assertEqual(server.fails, 0)
        client.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        listener.accept().respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        listener.assert_closed_cleanly()

    def test_bytes_on_idle_connection_close_it(self) -> None:
        """
        A server that sends bytes on an idle connection, where nothing may
        arrive, has the connection closed, and it is not handed out again.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        upstream.respond(b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(upstream.transport.disconnecting)

        client.send(GET)
        self.assertEqual(upstream.sent(), FORWARDED_GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        upstream.close()
        listener.accept().respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        listener.assert_closed_cleanly()

    def test_response_with_connection_close_not_kept(self) -> None:
        """
        A response saying C{Connection: close} ends its upstream connection;
        the client connection stays open.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        self.assertTrue(upstream.transport.disconnecting)
        self.assertFalse(upstream.aborted)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        self.assertEqual(client.received(), FORWARDED_OK)
        self.assertFalse(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_response_before_request_body_ends_not_kept(self) -> None:
        """
        A response complete before the request body is not kept for reuse,
        and the client connection, with body bytes unread, is closed after it.
        """
        listener = MemoryListener(self)
        client = listener.connect()
        client.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nabc")
        upstream = listener.accept()
        upstream.respond(OK)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        self.assertEqual(
            client.received(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nVia: 1.1 txproxy\r\n\r\nhello",
        )
        self.assertTrue(client.transport.disconnecting)
        listener.assert_closed_cleanly()

    def test_surplus_closed_after_grace(self) -> None:
        """
        With C{keepalive} connections already idle for a server, another whose
        exchange ends is kept too; L{SURPLUS_GRACE} after the surplus began,
        the connection idle longest closes.
        """
        listener = MemoryListener(self, keepalive=1)
        first, second = listener.connect(), listener.connect()
        first.send(GET)
        second.send(GET)
        one, two = listener.accept(0), listener.accept(1)
        one.respond(OK)
        listener.reactor.advance(0.25)
        two.respond(OK)
        self.assertEqual(listener.idle.count(listener.server()), 2)
        listener.reactor.advance(SURPLUS_GRACE - 0.01)
        self.assertFalse(one.transport.disconnecting)
        listener.reactor.advance(0.01)
        self.assertTrue(one.transport.disconnecting)
        self.assertFalse(two.transport.disconnecting)
        self.assertFalse(one.aborted)
        one.close()
        self.assertEqual(listener.idle.count(listener.server()), 1)
        listener.assert_closed_cleanly()

    def test_surplus_reused_within_grace(self) -> None:
        """
        A connection past C{keepalive} that a request takes before
        L{SURPLUS_GRACE} is over stays open: a burst of responses followed by a
        burst of requests connects nothing new.
        """
        listener = MemoryListener(self, keepalive=1)
        first, second = listener.connect(), listener.connect()
        first.send(GET)
        second.send(GET)
        one, two = listener.accept(0), listener.accept(1)
        one.respond(OK)
        two.respond(OK)
        listener.reactor.advance(SURPLUS_GRACE / 2)
        first.send(GET)
        second.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        listener.reactor.advance(SURPLUS_GRACE)
        self.assertFalse(one.transport.disconnecting)
        self.assertFalse(two.transport.disconnecting)
        one.respond(OK)
        two.respond(OK)
        self.assertEqual(listener.idle.count(listener.server()), 2)
        listener.reactor.advance(SURPLUS_GRACE)
        self.assertEqual([one.transport.disconnecting, two.transport.disconnecting], [True, False])
        listener.assert_closed_cleanly()

    def test_keepalive_zero_closes_at_once(self) -> None:
        """
        With C{keepalive=0} no connection is kept: each closes after its response.
        """
        listener = MemoryListener(self, keepalive=0)
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertEqual(listener.idle.count(listener.server()), 0)
        listener.assert_closed_cleanly()

    def test_stale_connection_retries_idempotent_request(self) -> None:
        """
        When a reused connection closes before any byte of the response, a GET
        is sent again on a new connection, without counting against the server.
        """
        listener = MemoryListener(self)
        server = listener.server()
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        client.send(GET)
        self.assertEqual(upstream.sent(), FORWARDED_GET * 2)
        upstream.close()
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        self.assertEqual(listener.destination(), server.address)
        self.assertEqual(client.received(), FORWARDED_OK)
        fresh = listener.accept()
        self.assertEqual(fresh.sent(), FORWARDED_GET)
        fresh.respond(OK)
        self.assertEqual(client.received(), FORWARDED_OK * 2)
        self.assertEqual(server.fails, 0)
        self.assertEqual(listener.idle.count(server), 1)
        listener.assert_closed_cleanly()

    def test_stale_connection_post_with_body_gets_502(self) -> None:
        """
        When a reused connection closes before any byte of the response to a
        POST whose body was sent, the request is not sent again: the client gets 502.
        """
        listener = MemoryListener(self)
        server = listener.server()
        client = listener.connect()
        client.send(GET)
        upstream = listener.accept()
        upstream.respond(OK)
        client.transport.clear()
        client.send(b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello")
        self.assertTrue(upstream.sent().endswith(b"\r\n\r\nhello"))
        upstream.close()
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        self.assertEqual(status_line(client.received()), b"HTTP/1.1 502 Bad Gateway")
        self.assertFalse(client.transport.disconnecting)
        self.assertEqual(server.active, 0)
        listener.assert_closed_cleanly()


class IdleUpstreamsTests(SynchronousTestCase):
    """
    Tests for L{IdleUpstreams} and L{UpstreamProtocol} on their own.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.clock = Clock()
        self.server = ServerState("10.0.0.1:8080")
        self.idle = IdleUpstreams(self.reactor, self.clock, max_idle=2, idle_timeout=5.0)

    def connected(self) -> tuple[UpstreamProtocol, StringTransport]:
        """
        An upstream connection to C{self.server} on a string transport.
        """
        upstream = UpstreamProtocol(self.server, self.idle)
        transport = StringTransport()
        upstream.makeConnection(transport)
        return upstream, transport

    def test_take_most_recent_first(self) -> None:
        """
        L{IdleUpstreams.take} gives the connection put last, and L{None} once
        none is left; the expiry timer then ends without setting another.
        """
        first, _ = self.connected()
        second, _ = self.connected()
        self.idle.put(first)
        self.idle.put(second)
        self.assertEqual(self.idle.count(self.server), 2)
        self.assertIs(self.idle.take(self.server), second)
        self.assertIs(self.idle.take(self.server), first)
        self.assertIsNone(self.idle.take(self.server))
        self.clock.advance(self.idle.idle_timeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connect_uses_timeout(self) -> None:
        """
        L{IdleUpstreams.connect} connects to the server's address with the
        timeout given, and fires with an L{UpstreamProtocol} for that server.
        """
        connected = self.idle.connect(self.server, 2.5)
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("10.0.0.1", 8080, 2.5))
        factory.buildProtocol(None).makeConnection(StringTransport())
        upstream = self.successResultOf(connected)
        self.assertIsInstance(upstream, UpstreamProtocol)
        self.assertIs(upstream.server, self.server)
        self.assertEqual(upstream.requests, 0)

    def test_close_closes_every_idle_connection(self) -> None:
        """
        L{IdleUpstreams.close} closes each idle connection; each is forgotten,
        timer and all, as its close completes.
        """
        first, first_transport = self.connected()
        second, second_transport = self.connected()
        self.idle.put(first)
        self.idle.put(second)
        self.idle.close()
        self.assertTrue(first_transport.disconnecting)
        self.assertTrue(second_transport.disconnecting)
        first.connectionLost(Failure(ConnectionDone()))
        second.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.idle.count(self.server), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_surplus_trimmed_oldest_first(self) -> None:
        """
        Connections past C{max_idle} close, the oldest first, each once it has
        been idle for L{SURPLUS_GRACE} and only while the server has a
        surplus; L{IdleUpstreams.close} cancels the timer.
        """
        connections = [self.connected() for _ in range(4)]
        (a, a_transport), (b, b_transport), (c, c_transport), (d, d_transport) = connections
        self.idle.put(a)
        self.idle.put(b)
        self.clock.advance(0.5)
        self.idle.put(c)
        self.clock.advance(SURPLUS_GRACE)
        self.assertEqual(
            [t.disconnecting for t in (a_transport, b_transport, c_transport)],
            [True, False, False],
        )
        a.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.idle.count(self.server), 2)
        self.clock.advance(0.1)
        self.idle.put(d)
        self.clock.advance(SURPLUS_GRACE / 2)
        self.assertFalse(b_transport.disconnecting)
        self.idle.close()
        self.assertTrue(all(t.disconnected for t in (b_transport, c_transport, d_transport)))
        for upstream in (b, c, d):
            upstream.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_use_counts_requests(self) -> None:
        """
        Each L{UpstreamProtocol.use} counts one more request and starts a new
        response with nothing received.
        """
        upstream, _ = self.connected()
        sink = RecordingSink()
        upstream.use(sink, b"GET")
        upstream.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertTrue(upstream.received)
        upstream.use(sink, b"GET")
        self.assertEqual(upstream.requests, 2)
        self.assertFalse(upstream.received)
        [head, end] = sink.events
        assert isinstance(head, ResponseHead)
        self.assertEqual(head.status, 204)
        self.assertIsInstance(end, EndOfMessage)

    def test_close_before_response_reported_to_sink(self) -> None:
        """
        A connection that closes while in use tells its sink, and is not
        kept or forgotten as an idle one.
        """
        upstream, _ = self.connected()
        sink = RecordingSink()
        upstream.use(sink, b"GET")
        upstream.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(sink.lost, [upstream])
        self.assertEqual(sink.events, [])
        self.assertIsNone(upstream.sink)
