"""
Tests for L{txproxy.http.h2}: HTTP/2 clients in front of HTTP/1.1 servers.
"""

from __future__ import annotations

import hashlib
import json
import os

import trustme
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes, Settings
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Request, Site

from tests.h2client import H2Client, H2Response, connect_h2
from tests.loopback import EchoPage, connect_raw, start_origin, start_proxy
from tests.test_http_channel import CLIENT, FIRST, Client, MemoryListener
from tests.tlsclient import ClientHello, connect_h2_tls, write_leaf
from txproxy import config
from txproxy.http.accesslog import AccessRecord
from txproxy.http.events import BadMessage, RequestHead
from txproxy.http.h2 import (
    MAX_CONCURRENT_STREAMS,
    PREFACE,
    STREAM_WINDOW,
    H2Channel,
    is_h2_preface,
    read_request_head,
    response_fields,
)
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.service import build_pool

MIB = 1024 * 1024


class H2Factory(HTTPFactory):
    """
    An HTTP listener's factory whose clients speak HTTP/2 with prior knowledge.
    """

    protocol = H2Channel


class RecordingPage(EchoPage):
    """
    An L{EchoPage} that keeps what each request brought: its method, target,
    headers and body.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[bytes, bytes, dict[bytes, list[bytes]], bytes]] = []

    def render(self, request: Request) -> bytes | int:
        body = request.content.read()
        request.content.seek(0)
        headers = {
            name.lower(): values for name, values in request.requestHeaders.getAllRawHeaders()
        }
        self.requests.append((request.method, request.uri, headers, body))
        return super().render(request)


class RecordingLog:
    """
    An access log that keeps its records.
    """

    def __init__(self) -> None:
        self.records: list[AccessRecord] = []

    def log(self, record: AccessRecord) -> None:
        self.records.append(record)


def described(response: H2Response) -> dict[str, object]:
    """
    The JSON an L{EchoPage} answered with.
    """
    return json.loads(bytes(response.body))


class ReadRequestHeadTests(SynchronousTestCase):
    """
    Tests for L{read_request_head}: h2's header blocks to HTTP/1.1 request heads.
    """

    def test_authority_becomes_host(self) -> None:
        """
        C{:authority} becomes a C{Host} field, first; the other fields follow in
        order, C{TE} dropped; a block that ends the stream has no body.
        """
        head = read_request_head(
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"example.com:8443"),
                (b":path", b"/a?b=1"),
                (b"accept", b"*/*"),
                (b"te", b"trailers"),
                (b"x-a", b"1"),
            ],
            stream_ended=True,
        )
        self.assertEqual(
            head,
            RequestHead(
                b"GET",
                b"/a?b=1",
                b"2",
                ((b"host", b"example.com:8443"), (b"accept", b"*/*"), (b"x-a", b"1")),
                host=b"example.com:8443",
            ),
        )
        assert isinstance(head, RequestHead)
        self.assertFalse(head.has_body)

    def test_host_kept(self) -> None:
        """
        A C{Host} field equal to C{:authority} stays where it was, and no other is added.
        """
        head = read_request_head(
            [(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/"), (b"host", b"a")],
            stream_ended=True,
        )
        assert isinstance(head, RequestHead)
        self.assertEqual(head.headers, ((b"host", b"a"),))

    def test_body_framing(self) -> None:
        """
        A body with C{Content-Length} keeps it; one without is chunked upstream.
        """
        fields = [(b":method", b"POST"), (b":authority", b"a"), (b":path", b"/")]
        framed = read_request_head([*fields, (b"content-length", b"5")], stream_ended=False)
        assert isinstance(framed, RequestHead)
        self.assertEqual((framed.content_length, framed.chunked), (5, False))
        unframed = read_request_head(fields, stream_ended=False)
        assert isinstance(unframed, RequestHead)
        self.assertEqual((unframed.content_length, unframed.chunked), (None, True))
        self.assertTrue(unframed.has_body)

    def test_expect_continue(self) -> None:
        """
        C{Expect: 100-continue} is noted on the head and kept.
        """
        head = read_request_head(
            [
                (b":method", b"PUT"),
                (b":authority", b"a"),
                (b":path", b"/"),
                (b"expect", b"100-Continue"),
            ],
            stream_ended=False,
        )
        assert isinstance(head, RequestHead)
        self.assertTrue(head.expect_continue)
        self.assertIn((b"expect", b"100-Continue"), head.headers)

    def test_rejected(self) -> None:
        """
        Requests that must not reach a server are turned down with the status
        the HTTP/1.1 reader gives: 405 for C{CONNECT}, 431 for too many
        fields, 400 for the rest.
        """
        base = [(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/")]
        cases = [
            ([(b":method", b"CONNECT"), (b":authority", b"a:443")], True, 405),
            ([(b":method", b"GET"), (b":authority", b"a")], True, 400),
            ([(b":authority", b"a"), (b":path", b"/")], True, 400),
            ([*base, (b"host", b"b")], True, 400),
            ([(b":method", b"GET"), (b":path", b"/")], True, 400),
            ([(b":method", b"GET"), (b":authority", b"a b"), (b":path", b"/")], True, 400),
            ([(b":method", b"GET"), (b":authority", b"u@a"), (b":path", b"/")], True, 400),
            ([(b":method", b"GET"), (b":authority", b""), (b":path", b"/")], True, 400),
            ([(b":method", b"GET"), (b":authority", b"a"), (b":path", b"a/b")], True, 400),
            ([(b":method", b"GET"), (b":authority", b"a"), (b":path", b"/#f")], True, 400),
            ([(b":method", b"GET"), (b":authority", b"a"), (b":path", b"*")], True, 400),
            ([*base, (b"content-length", b"1"), (b"content-length", b"1")], False, 400),
            ([*base, (b"content-length", b"-1")], False, 400),
            ([*base, (b"content-length", b"3")], True, 400),
            ([*base, (b"x", b"1"), (b"y", b"2"), (b"z", b"3")], True, 431),
        ]
        for fields, ended, status in cases:
            result = read_request_head(fields, stream_ended=ended, max_headers=2)
            self.assertIsInstance(result, BadMessage, fields)
            assert isinstance(result, BadMessage)
            self.assertEqual(result.status, status, fields)

    def test_asterisk_for_options(self) -> None:
        """
        C{OPTIONS *} is a request like any other.
        """
        head = read_request_head(
            [(b":method", b"OPTIONS"), (b":authority", b"a"), (b":path", b"*")],
            stream_ended=True,
        )
        assert isinstance(head, RequestHead)
        self.assertEqual(head.target, b"*")


class ResponseFieldsTests(SynchronousTestCase):
    """
    Tests for L{response_fields}.
    """

    def test_lower_case_without_connection_fields(self) -> None:
        """
        C{:status} comes first, names are lower-cased, and fields that describe
        a connection are left out.
        """
        self.assertEqual(
            response_fields(
                200,
                (
                    (b"Content-Type", b"text/plain"),
                    (b"Connection", b"close"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"Transfer-Encoding", b"chunked"),
                    (b"Upgrade", b"h2c"),
                    (b"Proxy-Connection", b"close"),
                    (b"TE", b"trailers"),
                    (b"Set-Cookie", b"a=1"),
                    (b"Set-Cookie", b"b=2"),
                ),
            ),
            [
                (b":status", b"200"),
                (b"content-type", b"text/plain"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
            ],
        )


class PrefaceTests(SynchronousTestCase):
    """
    Tests for L{is_h2_preface}.
    """

    def test_preface(self) -> None:
        """
        The preface, alone or followed by frames, is HTTP/2.
        """
        self.assertIs(is_h2_preface(PREFACE), True)
        self.assertIs(is_h2_preface(PREFACE + b"\x00\x00\x00\x04"), True)

    def test_too_short(self) -> None:
        """
        Nothing, or a beginning of the preface, cannot be told yet.
        """
        self.assertIsNone(is_h2_preface(b""))
        self.assertIsNone(is_h2_preface(b"PRI * HTTP/2"))
        self.assertIsNone(is_h2_preface(PREFACE[:-1]))

    def test_not_preface(self) -> None:
        """
        An HTTP/1.1 request, or bytes that part from the preface, are not HTTP/2.
        """
        self.assertIs(is_h2_preface(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), False)
        self.assertIs(is_h2_preface(b"POST / HTTP/1.1\r\n"), False)
        self.assertIs(is_h2_preface(b"PRI * HTTP/1.1\r\n"), False)
        self.assertIs(is_h2_preface(PREFACE[:-1] + b"X" + b"more"), False)


class MemoryClient:
    """
    An h2 client driven by hand against an L{H2Channel} on a string transport,
    its servers on a memory reactor.
    """

    def __init__(self, listener: MemoryListener, window: int | None = None) -> None:
        listener.factory.protocol = H2Channel
        channel = listener.factory.buildProtocol(CLIENT)
        assert isinstance(channel, H2Channel)
        self.channel = channel
        self.transport = StringTransport(peerAddress=CLIENT)
        channel.makeConnection(self.transport)
        listener.clients.append(Client(channel, self.transport))
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        if window is not None:
            self.h2.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.h2.initiate_connection()
        self.send()
        self.events()

    def send(self) -> None:
        """
        Deliver what the client has to send.
        """
        data = self.h2.data_to_send()
        if data:
            self.channel.dataReceived(data)

    def events(self) -> list[Event]:
        """
        Read what txproxy sent since the last call.
        """
        data = self.transport.value()
        self.transport.clear()
        events = self.h2.receive_data(data)
        self.send()
        return events

    def get(self, path: bytes = b"/", end: bool = True) -> int:
        """
        Send a request; return its stream.
        """
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            stream_id,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", path)],
            end_stream=end,
        )
        self.send()
        return stream_id


class H2ChannelTests(SynchronousTestCase):
    """
    Tests for L{H2Channel} on a string transport, its time on a memory reactor.
    """

    def setUp(self) -> None:
        self.listener = MemoryListener(self, limits=config.Limits(client_idle_timeout=30.0))

    def test_settings(self) -> None:
        """
        txproxy announces its concurrency and window, and opens the
        connection's window beyond the default.
        """
        client = MemoryClient(self.listener)
        self.assertEqual(
            client.h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS],
            MAX_CONCURRENT_STREAMS,
        )
        self.assertEqual(client.h2.remote_settings.initial_window_size, STREAM_WINDOW)
        self.assertGreater(client.h2.outbound_flow_control_window, STREAM_WINDOW)
        self.listener.assert_closed_cleanly()

    def test_idle_connection_goes_away(self) -> None:
        """
        A connection with no stream open is sent GOAWAY (NO_ERROR) and closed
        after C{client_idle_timeout} seconds, not before; a stream in between
        starts the count again.
        """
        client = MemoryClient(self.listener)
        self.listener.reactor.advance(29)
        stream_id = client.get()
        upstream = self.listener.accept()
        self.listener.reactor.advance(29)
        upstream.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertIn(StreamEnded(stream_id=stream_id), client.events())
        self.listener.reactor.advance(29.9)
        self.assertEqual(client.events(), [])
        self.assertFalse(client.transport.disconnecting)
        self.listener.reactor.advance(0.1)
        [terminated] = client.events()
        assert isinstance(terminated, ConnectionTerminated)
        self.assertEqual(terminated.error_code, ErrorCodes.NO_ERROR)
        self.assertEqual(terminated.last_stream_id, stream_id)
        self.assertTrue(client.transport.disconnecting)
        # Still registered, a paused channel would keep the transport open.
        self.assertIsNone(client.transport.producer)
        self.listener.assert_closed_cleanly()

    def test_upstream_timeout(self) -> None:
        """
        A server silent for C{upstream_response_timeout} seconds gets its
        stream answered 504 while the connection's other streams go on.
        """
        client = MemoryClient(self.listener)
        slow = client.get(b"/slow")
        self.listener.accept()
        fast = client.get(b"/fast")
        fast_upstream = self.listener.accept()
        self.listener.reactor.advance(59)
        fast_upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.listener.reactor.advance(1)
        statuses = {
            event.stream_id: dict(event.headers)[b":status"]
            for event in client.events()
            if isinstance(event, ResponseReceived)
        }
        self.assertEqual(statuses, {slow: b"504", fast: b"200"})
        self.assertEqual(self.listener.server(FIRST).active, 0)
        self.listener.assert_closed_cleanly()

    def test_stalled_response_reset(self) -> None:
        """
        A complete response that the client opens no window for is reset
        (CANCEL) after C{client_idle_timeout} seconds, and the server is not
        held meanwhile.
        """
        client = MemoryClient(self.listener, window=10)
        stream_id = client.get()
        upstream = self.listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n" + b"x" * 50)
        self.assertEqual(self.listener.server(FIRST).active, 0)
        client.events()
        self.listener.reactor.advance(29.9)
        self.assertEqual(client.events(), [])
        self.listener.reactor.advance(0.1)
        [reset] = client.events()
        self.assertEqual(reset, StreamReset(stream_id=stream_id, error_code=ErrorCodes.CANCEL))
        self.listener.assert_closed_cleanly()

    def test_rapid_reset(self) -> None:
        """
        A client that opens and resets streams faster than Twisted's bucket
        allows (CVE-2023-44487) is sent GOAWAY (ENHANCE_YOUR_CALM), and each
        server it was given is released.
        """
        client = MemoryClient(self.listener)
        terminated = []
        for _ in range(1100):
            stream_id = client.get(end=False)
            client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
            client.send()
            terminated = [
                event for event in client.events() if isinstance(event, ConnectionTerminated)
            ]
            if terminated:
                break
        self.assertEqual(terminated[0].error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertGreater(stream_id, 1000)
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(self.listener.server(FIRST).active, 0)
        self.listener.assert_closed_cleanly()

    def test_flow_control_pauses_server(self) -> None:
        """
        While the client's window holds some of the response back, the server
        is paused; a WINDOW_UPDATE sends the rest and resumes it.
        """
        client = MemoryClient(self.listener, window=10)
        stream_id = client.get()
        upstream = self.listener.accept()
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 50)
        received = [event for event in client.events() if isinstance(event, DataReceived)]
        self.assertEqual(b"".join(event.data for event in received), b"x" * 10)
        self.assertEqual(upstream.transport.producerState, "paused")
        client.h2.increment_flow_control_window(1000, stream_id)
        client.send()
        received = [event for event in client.events() if isinstance(event, DataReceived)]
        self.assertEqual(b"".join(event.data for event in received), b"x" * 40)
        self.assertEqual(upstream.transport.producerState, "producing")
        upstream.respond(b"y" * 50)
        self.assertIn(StreamEnded(stream_id=stream_id), client.events())
        self.listener.assert_closed_cleanly()

    def test_full_transport_pauses_servers(self) -> None:
        """
        While the client's transport cannot take more, txproxy stops reading
        the client and pauses every stream's server, and resumes both after.
        """
        client = MemoryClient(self.listener)
        client.get(b"/a")
        client.get(b"/b")
        first, second = self.listener.accept(0), self.listener.accept(1)
        client.channel.pauseProducing()
        states = [client.transport, first.transport, second.transport]
        self.assertEqual([each.producerState for each in states], ["paused"] * 3)
        client.channel.resumeProducing()
        self.assertEqual([each.producerState for each in states], ["producing"] * 3)
        self.listener.assert_closed_cleanly()

    def test_paused_stream_withholds_credit(self) -> None:
        """
        Body read while its exchange cannot forward it (no server connected
        yet) is not acknowledged, so that the client stops sending on that
        stream; the connection is not paused, and other streams go on. The
        credit is given back once the body is forwarded.
        """
        client = MemoryClient(self.listener)
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/up"),
            ],
        )
        for _ in range(40):
            client.h2.send_data(stream_id, b"z" * 16000)
        client.send()
        client.events()
        self.assertEqual(client.h2.local_flow_control_window(stream_id), STREAM_WINDOW - 640000)
        self.assertEqual(client.transport.producerState, "producing")
        client.get(b"/other")
        self.assertEqual(len(self.listener.reactor.tcpClients), 2)
        upstream = self.listener.accept(0)
        client.events()
        self.assertEqual(client.h2.local_flow_control_window(stream_id), STREAM_WINDOW)
        self.assertEqual(upstream.sent().count(b"z"), 640000)
        self.listener.assert_closed_cleanly()

    def test_body_over_limit(self) -> None:
        """
        A body that grows past C{max_body} is answered 413 while the client
        still sends, then the stream is reset with NO_ERROR, which asks the
        client to stop sending (RFC 9113 8.1); its server is released.
        """
        listener = MemoryListener(self, limits=config.Limits(max_body=10))
        client = MemoryClient(listener)
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            stream_id,
            [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
        )
        client.h2.send_data(stream_id, b"z" * 20)
        client.send()
        events = client.events()
        [response] = [event for event in events if isinstance(event, ResponseReceived)]
        self.assertEqual(dict(response.headers)[b":status"], b"413")
        self.assertEqual([type(event) for event in events][-2:], [StreamEnded, StreamReset])
        self.assertEqual(events[-1].error_code, ErrorCodes.NO_ERROR)
        self.assertEqual(listener.server(FIRST).active, 0)
        listener.assert_closed_cleanly()

    def test_reset_in_the_same_read(self) -> None:
        """
        A stream opened and reset in one read is never answered, even when
        txproxy could answer it at once (here 404): h2 has closed it already.
        The connection goes on.
        """
        listener = MemoryListener(self, path="/api/")
        client = MemoryClient(listener)
        stream_id = client.h2.get_next_available_stream_id()
        client.h2.send_headers(
            stream_id,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")],
            end_stream=True,
        )
        client.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.send()
        self.assertEqual(client.events(), [])
        second = client.get(b"/other")
        self.assertEqual(
            [event.stream_id for event in client.events() if isinstance(event, ResponseReceived)],
            [second],
        )
        listener.assert_closed_cleanly()

    def test_refused_while_closing(self) -> None:
        """
        Once the listener stops accepting, new streams are refused
        (REFUSED_STREAM), which tells clients they may retry elsewhere.
        """
        client = MemoryClient(self.listener)
        self.listener.factory.accepting = False
        stream_id = client.get()
        self.assertEqual(
            client.events(),
            [StreamReset(stream_id=stream_id, error_code=ErrorCodes.REFUSED_STREAM)],
        )
        self.assertEqual(self.listener.reactor.tcpClients, [])
        self.listener.assert_closed_cleanly()

    def test_connection_lost(self) -> None:
        """
        When the connection is lost, every stream's exchange is abandoned: its
        server released and its upstream connection dropped, no timer left.
        """
        client = MemoryClient(self.listener)
        client.get(b"/a")
        client.get(b"/b")
        first, second = self.listener.accept(0), self.listener.accept(1)
        self.assertEqual(self.listener.server(FIRST).active, 2)
        self.listener.clients[0].close()
        self.assertEqual(self.listener.server(FIRST).active, 0)
        self.assertTrue(first.aborted and second.aborted)
        self.assertNotIn(client.channel, self.listener.factory.channels)
        self.listener.assert_closed_cleanly()


class H2ProxyTests(TestCase):
    """
    An HTTP/2 listener on loopback in front of a loopback origin.
    """

    def setUp(self) -> None:
        self.page = RecordingPage()
        site = Site(self.page)
        site.noisy = False
        site.log = lambda request: None
        self.origin: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.origin.stopListening)
        self.clients: list[H2Client] = []

    def proxy(
        self,
        path: str = "/",
        limits: config.Limits | None = None,
        clock: object = reactor,
        access_log: object = None,
    ) -> int:
        """
        Start an HTTP/2 listener with one route to the origin; return its port.
        """
        address = f"127.0.0.1:{self.origin.getHost().port}"
        pool = config.Pool("web", servers=[config.Server(address)])
        self.pool = build_pool(pool)
        self.server = self.pool.server(address)
        idle = IdleUpstreams(reactor, reactor, pool.keepalive, pool.keepalive_timeout)
        listener = config.HTTPListener(
            "tcp:0", routes=[config.Route(pool, path=path)], limits=limits or config.Limits()
        )
        self.factory = H2Factory(listener, {"web": self.pool}, {"web": idle}, clock, access_log)
        port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(idle.close)
        self.addCleanup(self.factory.close_connections)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def connect(self, port: int, **options: object) -> Deferred[H2Client]:
        """
        Connect an L{H2Client}, closed when the test ends.
        """
        client: H2Client = yield connect_h2(port, **options)

        def close() -> Deferred[None]:
            client.transport.loseConnection()
            return client.closed

        self.addCleanup(close)
        self.clients.append(client)
        return client

    @inlineCallbacks
    def test_get(self) -> Deferred[None]:
        """
        A GET reaches the origin as HTTP/1.1 with C{Host} from C{:authority},
        X-Forwarded-* and C{Via: 2 txproxy}; its answer comes back with
        lower-case names and no connection-specific fields.
        """
        client = yield self.connect(self.proxy())
        response = yield client.request(b"/a?b=1").done
        self.assertEqual((response.status, response.ended), (200, True))
        body = described(response)
        self.assertEqual((body["method"], body["uri"]), ("GET", "/a?b=1"))
        [(_, _, headers, _)] = self.page.requests
        self.assertEqual(headers[b"host"], [b"example.com"])
        self.assertEqual(headers[b"x-forwarded-proto"], [b"http"])
        self.assertEqual(headers[b"x-forwarded-for"], [b"127.0.0.1"])
        self.assertEqual(headers[b"via"], [b"2 txproxy"])
        self.assertEqual(response.header(b"content-type"), [b"application/json"])
        names = [name for name, _ in response.headers]
        self.assertEqual(names, [name.lower() for name in names])
        self.assertNotIn(b"connection", names)
        self.assertNotIn(b"transfer-encoding", names)

    @inlineCallbacks
    def test_concurrent_streams(self) -> Deferred[None]:
        """
        Twenty-five requests sent at once on one connection are each answered
        with their own response.
        """
        client = yield self.connect(self.proxy())
        pending = [client.request(b"/stream/%d" % (number,)) for number in range(25)]
        responses = yield gatherResults([response.done for response in pending])
        self.assertEqual(
            [described(response)["uri"] for response in responses],
            [f"/stream/{number}" for number in range(25)],
        )
        self.assertEqual(len(self.factory.channels), 1)
        self.assertEqual(len(self.page.requests), 25)

    @inlineCallbacks
    def test_large_upload(self) -> Deferred[None]:
        """
        A 4 MiB body, more than the stream's and the connection's windows,
        reaches the origin whole: txproxy acknowledges what it forwards.
        """
        client = yield self.connect(self.proxy())
        body = hashlib.sha256(b"seed").digest() * (4 * MIB // 32)
        response = yield client.request(
            b"/upload",
            b"POST",
            headers=[(b"content-length", b"%d" % (len(body),))],
            body=body,
        ).done
        self.assertEqual(response.status, 200)
        self.assertEqual(described(response)["body_length"], 4 * MIB)
        self.assertEqual(self.page.requests[0][3], body)

    @inlineCallbacks
    def test_large_download(self) -> Deferred[None]:
        """
        A 4 MiB response, more than the client's windows, comes whole as the
        client acknowledges it.
        """
        client = yield self.connect(self.proxy())
        response = yield client.request(b"/bytes/%d" % (4 * MIB,)).done
        self.assertEqual((response.status, response.ended), (200, True))
        self.assertEqual(bytes(response.body), b"y" * (4 * MIB))

    @inlineCallbacks
    def test_post_with_length(self) -> Deferred[None]:
        """
        A body with C{content-length} reaches the origin with it, byte for byte.
        """
        client = yield self.connect(self.proxy())
        response = yield client.request(
            b"/p", b"POST", headers=[(b"content-length", b"11")], body=b"hello world"
        ).done
        self.assertEqual(response.status, 200)
        [(method, _, headers, body)] = self.page.requests
        self.assertEqual((method, body), (b"POST", b"hello world"))
        self.assertEqual(headers[b"content-length"], [b"11"])
        self.assertNotIn(b"transfer-encoding", headers)

    @inlineCallbacks
    def test_post_without_length(self) -> Deferred[None]:
        """
        A body without C{content-length} reaches the origin chunked, byte for
        byte, its end (an empty DATA frame) ending the chunked body once: the
        next request on the same upstream connection is answered too.
        """
        client = yield self.connect(self.proxy())
        response = client.request(b"/p", b"POST", body=b"hello ", end=False)
        client.send(client.stream_id(response), b"world", end=True)
        response = yield response.done
        second = yield client.request(b"/after").done
        self.assertEqual((response.status, second.status), (200, 200))
        [(_, _, headers, body), (_, uri, _, _)] = self.page.requests
        self.assertEqual(body, b"hello world")
        self.assertEqual(headers[b"transfer-encoding"], [b"chunked"])
        self.assertEqual(uri, b"/after")
        self.assertEqual(described(response)["connection"], described(second)["connection"])

    @inlineCallbacks
    def test_head(self) -> Deferred[None]:
        """
        A response to HEAD ends with its head: no DATA, the stream ended.
        """
        client = yield self.connect(self.proxy())
        response = yield client.request(b"/", b"HEAD").done
        self.assertEqual((response.status, response.ended, bytes(response.body)), (200, True, b""))
        self.assertEqual(self.page.requests[0][0], b"HEAD")

    @inlineCallbacks
    def test_no_route(self) -> Deferred[None]:
        """
        A request no route matches is answered 404 by txproxy, with its short
        body and no connection fields, and the connection stays open.
        """
        client = yield self.connect(self.proxy(path="/api/"))
        response = yield client.request(b"/other").done
        self.assertEqual(response.status, 404)
        self.assertEqual(bytes(response.body), b"404 Not Found\n")
        self.assertEqual(response.header(b"content-type"), [b"text/plain; charset=utf-8"])
        self.assertEqual(response.header(b"content-length"), [b"14"])
        self.assertNotIn(b"connection", [name for name, _ in response.headers])
        again = yield client.request(b"/api/x").done
        self.assertEqual(again.status, 200)
        self.assertEqual([uri for _, uri, _, _ in self.page.requests], [b"/api/x"])

    @inlineCallbacks
    def assert_never_forwarded(self, headers: list[tuple[bytes, bytes]]) -> Deferred[None]:
        """
        A request with C{headers} closes the connection with GOAWAY
        (PROTOCOL_ERROR) and never reaches the origin, while a good request
        on a new connection does.
        """
        port = self.proxy()
        client = yield self.connect(port, validate=False)
        response = yield client.request(b"/bad", headers=headers).done
        yield client.closed
        self.assertIsNone(response.status)
        self.assertEqual([goaway.error_code for goaway in client.goaways], [1])
        good = yield self.connect(port)
        response = yield good.request(b"/good").done
        self.assertEqual(response.status, 200)
        self.assertEqual([uri for _, uri, _, _ in self.page.requests], [b"/good"])

    def test_upper_case_name_never_forwarded(self) -> Deferred[None]:
        """
        A field name in upper case is malformed in HTTP/2 (RFC 9113 8.2.1).
        """
        return self.assert_never_forwarded([(b"X-Upper", b"1")])

    def test_connection_field_never_forwarded(self) -> Deferred[None]:
        """
        A connection-specific field is malformed in HTTP/2 (RFC 9113 8.2.2).
        """
        return self.assert_never_forwarded([(b"transfer-encoding", b"chunked")])

    @inlineCallbacks
    def test_reset_releases_upstream(self) -> Deferred[None]:
        """
        A stream the client resets in the middle of a download releases its
        server at once, and its upstream connection is dropped.
        """
        client = yield self.connect(self.proxy(), acknowledge=False)
        response = client.request(b"/bytes/%d" % (64 * MIB,))
        yield response.wait_for_body(65535)
        self.assertEqual(self.server.active, 1)
        client.reset(response)
        yield client.ping()
        self.assertEqual(self.server.active, 0)
        self.assertIsNone(response.reset)
        self.assertLess(len(response.body), 64 * MIB)
        # The connection's window is the client's to open again.
        client.acknowledge_all()
        after = yield client.request(b"/after").done
        self.assertEqual((after.status, after.ended), (200, True))

    @inlineCallbacks
    def test_go_away(self) -> Deferred[None]:
        """
        L{H2Channel.go_away} tells the client, with GOAWAY (NO_ERROR), the
        last stream it serves; that stream is answered to its end, and the
        connection then closes.
        """
        client = yield self.connect(self.proxy(), acknowledge=False)
        response = client.request(b"/bytes/%d" % (MIB,))
        yield response.wait_for_body(65535)
        [channel] = self.factory.channels
        assert isinstance(channel, H2Channel)
        channel.go_away()
        yield client.ping()
        self.assertEqual(
            [(goaway.error_code, goaway.last_stream_id) for goaway in client.goaways], [(0, 1)]
        )
        client.acknowledge_all()
        yield response.done
        yield client.closed
        self.assertEqual((response.ended, len(response.body)), (True, MIB))
        self.assertEqual(client.goaways[-1].error_code, 0)
        self.assertEqual(client.goaways[-1].last_stream_id, 1)

    @inlineCallbacks
    def test_idle_timeout(self) -> Deferred[None]:
        """
        A connection with no stream open is sent GOAWAY (NO_ERROR) and closed
        after C{client_idle_timeout} seconds.
        """
        clock = Clock()
        client = yield self.connect(
            self.proxy(limits=config.Limits(client_idle_timeout=5.0), clock=clock)
        )
        yield client.ping()
        clock.advance(4.9)
        yield client.ping()
        self.assertEqual(client.goaways, [])
        clock.advance(0.1)
        yield client.closed
        self.assertEqual([goaway.error_code for goaway in client.goaways], [0])

    @inlineCallbacks
    def test_access_log(self) -> Deferred[None]:
        """
        Each stream makes one access log record, with the request line of
        HTTP/2 and the server and pool that answered.
        """
        access_log = RecordingLog()
        client = yield self.connect(self.proxy(path="/api/", access_log=access_log))
        yield gatherResults(
            [
                client.request(b"/api/a").done,
                client.request(b"/api/b", b"POST", body=b"x").done,
                client.request(b"/nowhere").done,
            ]
        )
        records = sorted(access_log.records, key=lambda record: record.target)
        self.assertEqual(
            [
                (record.method, record.target, record.version, record.status, record.upstream)
                for record in records
            ],
            [
                (b"GET", b"/api/a", b"2", 200, f"127.0.0.1:{self.origin.getHost().port}"),
                (b"POST", b"/api/b", b"2", 200, f"127.0.0.1:{self.origin.getHost().port}"),
                (b"GET", b"/nowhere", b"2", 404, "-"),
            ],
        )
        self.assertEqual([record.pool for record in records], ["web", "web", None])
        self.assertEqual({record.client for record in records}, {"127.0.0.1"})
        self.assertGreater(records[0].bytes_sent, 0)


class NegotiationTests(TestCase):
    """
    Listeners built by L{makeService} hand a connection to HTTP/2 when the
    client chose it: by ALPN over TLS, or by its preface where h2c is on.
    """

    def start(self, **listener: object) -> int:
        origin = start_origin(self)
        pool = config.Pool("web", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])
        _, port = start_proxy(
            self,
            config.Proxy(
                listeners=[
                    config.HTTPListener(
                        "tcp:0:interface=127.0.0.1", routes=[config.Route(pool)], **listener
                    )
                ]
            ),
        )
        return port

    @inlineCallbacks
    def request(self, client: H2Client) -> Deferred[H2Response]:
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        response: H2Response = yield client.request(b"/a").done
        return response

    @inlineCallbacks
    def test_h2c_prior_knowledge(self) -> Deferred[None]:
        """
        With C{h2c=True}, a plain connection that starts with the HTTP/2
        preface is served over HTTP/2, and HTTP/1.1 still works beside it.
        """
        port = self.start(h2c=True)
        client = yield connect_h2(port)
        response = yield self.request(client)
        self.assertEqual(response.status, 200)
        self.assertEqual(json.loads(bytes(response.body))["uri"], "/a")
        raw = yield connect_raw(port)
        raw.transport.write(b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        received = yield raw.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:40])

    @inlineCallbacks
    def test_h2c_off(self) -> Deferred[None]:
        """
        Without h2c, the HTTP/2 preface is a bad HTTP/1.1 request: 400 and close.
        """
        port = self.start()
        raw = yield connect_raw(port)
        raw.transport.write(PREFACE)
        received = yield raw.closed
        self.assertTrue(received.startswith(b"HTTP/1.1 400 Bad Request\r\n"), received[:40])

    @inlineCallbacks
    def test_alpn_h2(self) -> Deferred[None]:
        """
        Over TLS, a client that chose h2 by ALPN is served over HTTP/2, with
        C{X-Forwarded-Proto: https}.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        ca = trustme.CA()
        site = write_leaf(directory, "site.pem", ca.issue_cert("a.example.com"))
        port = self.start(tls=config.TLS(certificates=[site]))
        client = yield connect_h2_tls(port, ClientHello(ca=ca, alpn=[b"h2"]))
        response = yield self.request(client)
        self.assertEqual(response.status, 200)
        headers = json.loads(bytes(response.body))["headers"]
        self.assertIn(["X-Forwarded-Proto", "https"], headers)
        self.assertIn(["Via", "2 txproxy"], headers)
