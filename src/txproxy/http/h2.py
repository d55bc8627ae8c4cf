# -*- test-case-name: tests.test_http_h2 -*-
"""
The client side of an HTTP listener over HTTP/2: each stream is one request, handed to an exchange.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from attrs import evolve
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IDelayedCall, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy.http.accesslog import AccessRecord
from txproxy.http.events import BadMessage, Headers, RequestHead, ResponseHead
from txproxy.http.exchange import ExchangeLike
from txproxy.http.headers import header_value
from txproxy.http.parsing import AUTHORITY
from txproxy.http.responses import LocalResponse, local_response
from txproxy.interfaces import IProxyTransport, PickContext
from txproxy.tcp import client_hash_key

if TYPE_CHECKING:
    from txproxy.config import Limits
    from txproxy.http.listener import HTTPFactory
    from txproxy.http.upstream import UpstreamProtocol

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_CONCURRENT_STREAMS",
    "PREFACE",
    "STREAM_WINDOW",
    "H2Channel",
    "H2Stream",
    "is_h2_preface",
    "read_request_head",
    "response_fields",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""
The client connection preface (RFC 9113 3.4), which starts every HTTP/2 connection.
"""

MAX_CONCURRENT_STREAMS = 100
"""
The most streams a client may have open at once on one connection.
"""

STREAM_WINDOW = 1 << 20
"""
The bytes of request body a client may send on one stream before txproxy acknowledges them.
"""

CONNECTION_WINDOW = 16 << 20
"""
The bytes of request body a client may send on all its streams before txproxy
acknowledges them: larger than one stream's window, so that a few streams whose
servers are slow do not hold up the others.
"""

# RFC 9113 6.9.2: every window starts at 65,535 bytes until SETTINGS change it.
_DEFAULT_WINDOW = 65535

# RFC 9113 8.2.2: fields that describe one connection mean nothing in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)

# The bucket that limits the streams a client may reset: Twisted's numbers
# against HTTP/2 Rapid Reset (CVE-2023-44487), where a client opens and
# cancels streams faster than the servers behind can drop the work.
_RESET_BURST = 1000.0
_RESET_RATE = 33.0

# Headers are bytes, validated and normalised (Cookie fields joined, RFC 9113
# 8.2.3) on the way in. Outbound, response_fields does what h2 would.
_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=True,
    normalize_inbound_headers=True,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)

# What the access log shows for a request whose head could not be used.
_UNREAD = RequestHead(b"", b"", b"2", ())


def is_h2_preface(data: bytes) -> bool | None:
    """
    Tell whether the first bytes of a plain connection are an HTTP/2 client's
    preface, which a client with prior knowledge of h2c sends (RFC 9113 3.3).

    @param data: the bytes received so far.
    @return: C{True} when C{data} starts with L{PREFACE}, C{False} when it
        cannot, and L{None} when it is too short to tell.
    """
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return None if PREFACE.startswith(data) else False


def read_request_head(
    fields: Iterable[tuple[bytes, bytes]], stream_ended: bool, max_headers: int = 0
) -> RequestHead | BadMessage:
    """
    Make the L{RequestHead} of an HTTP/2 request from its header block, held
    to the rules of the HTTP/1.1 reader, since the request goes on as HTTP/1.1.

    The pseudo-header fields become the method, the target and, when no
    C{Host} field was sent, a C{Host} field first (RFC 9113 8.3.1). C{TE} is
    dropped. A body without C{Content-Length} is chunked upstream.

    @param fields: the header block as h2 validated it: names in lower
        case, pseudo-header fields first, no connection-specific field.
    @param stream_ended: whether the block ended the stream, so that no body follows.
    @param max_headers: the most fields besides the pseudo-header fields; 0
        for no limit.
    @return: the head, or a L{BadMessage}: 400 for a malformed request, 405
        for C{CONNECT}, 431 for too many fields.
    """
    method = target = authority = host = length = None
    expect_continue = False
    lengths = 0
    headers: list[tuple[bytes, bytes]] = []
    for field in fields:
        name = field[0]
        if name[:1] == b":":
            if name == b":method":
                method = field[1]
            elif name == b":path":
                target = field[1]
            elif name == b":authority":
                authority = field[1]
            continue
        if name == b"host":
            host = field[1]
        elif name == b"content-length":
            lengths += 1
            length = field[1]
        elif name == b"te":
            continue
        elif name == b"expect":
            expect_continue = field[1].lower() == b"100-continue"
        headers.append(field)
    if method == b"CONNECT":
        return BadMessage("CONNECT is not supported", 405)
    if method is None or target is None:
        return BadMessage("no :method or :path")
    if max_headers and len(headers) > max_headers:
        return BadMessage("too many header fields", 431)
    # RFC 9113 8.3.1: origin-form, or asterisk-form for OPTIONS; no fragment.
    if target[:1] == b"/":
        if b"#" in target:
            return BadMessage("invalid :path")
    elif target != b"*" or method != b"OPTIONS":
        return BadMessage("invalid :path")
    if authority is not None:
        if host is None:
            host = authority
            headers.insert(0, (b"host", authority))
        elif host != authority:
            return BadMessage(":authority and Host differ")
    if not host or AUTHORITY.fullmatch(host) is None:
        return BadMessage("invalid or no :authority")
    content_length = None
    if lengths:
        # h2 checks the digits and the DATA against the value; a second field,
        # even an equal one, is as ambiguous as it is in HTTP/1.1.
        if lengths > 1 or length is None or not length.isdigit():
            return BadMessage("invalid Content-Length")
        content_length = int(length)
        if content_length and stream_ended:
            return BadMessage("Content-Length without a body")
    return RequestHead(
        method,
        target,
        b"2",
        tuple(headers),
        content_length,
        content_length is None and not stream_ended,
        True,
        False,
        expect_continue,
        host,
    )


def response_fields(status: int, headers: Headers) -> list[tuple[bytes, bytes]]:
    """
    The HTTP/2 header block of a response: C{:status}, then the fields with
    their names in lower case (RFC 9113 8.2), less those that describe a
    connection (8.2.2).
    """
    fields = [(b":status", b"%d" % (status,))]
    for name, value in headers:
        name = name.lower()
        if name not in _CONNECTION_SPECIFIC:
            fields.append((name, value))
    return fields


def _local_fields(response: LocalResponse) -> list[tuple[bytes, bytes]]:
    """
    The header block of one of txproxy's own responses.
    """
    fields = response_fields(response.status, response.headers)
    fields.append((b"content-length", b"%d" % (len(response.body),)))
    return fields


def _local_settings(limits: Limits) -> Settings:
    """
    The settings txproxy announces to an HTTP/2 client of a listener.
    """
    # RFC 9113 6.5.2 counts 32 bytes for each field beside its name and value.
    header_list_size = (
        limits.max_header_size + 32 * (limits.max_headers or 0)
        if limits.max_header_size
        else H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE
    )
    return Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SettingCodes.MAX_HEADER_LIST_SIZE: header_list_size,
        },
    )


@implementer(IPushProducer)
class H2Stream:
    """
    One stream of an HTTP/2 connection: the client of the L{Exchange} that
    answers its request.

    As an L{IPushProducer}, a stream is the reading of its request body: the
    exchange pauses it while the server cannot take more, and a paused stream
    withholds the flow-control credit for what it reads, so that this client
    stops sending on this stream alone.

    Response body that the client's flow-control windows cannot take yet
    waits in C{outbound}, with the server paused until there is room.

    @ivar stream_id: the stream's identifier.
    @ivar request: the request's head, or a placeholder while it was not read.
    @ivar exchange: the exchange answering the request, until it ends.
    @ivar request_ended: whether the client has sent the whole request.
    @ivar outbound: response body not sent yet, in order.
    @ivar ending: whether the response is complete once C{outbound} is sent.
    @ivar end_sent: whether the response's last frame went.
    @ivar closed: whether the channel has forgotten the stream.
    @ivar unacknowledged: bytes read while paused, their credit withheld.
    """

    def __init__(self, channel: H2Channel, stream_id: int, request_ended: bool) -> None:
        self._channel = channel
        self.stream_id = stream_id
        self.request = _UNREAD
        self.exchange: ExchangeLike | None = None
        self.request_ended = request_ended
        self.outbound: deque[bytes | memoryview] = deque()
        self.ending = False
        self.end_sent = False
        self.closed = False
        self.unacknowledged = 0
        self.reading_paused = False
        self._response_producer: IPushProducer | None = None
        self._producer_paused = False
        self._status = 0
        self._bytes_sent = 0
        self._started = channel.factory.clock.seconds()
        self._deadline = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def producer(self) -> IPushProducer:
        """
        The stream itself: pausing it pauses the reading of its request body.
        """
        return self

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False
        if self.unacknowledged and not self.closed:
            self._channel._acknowledge(self.stream_id, self.unacknowledged)
            self.unacknowledged = 0
            self._channel._write()

    def stopProducing(self) -> None:
        """
        Nothing to do: the server connection that stopped is the exchange's to handle.
        """

    def throttle(self) -> None:
        """
        Pause the server while the response cannot be sent, because flow
        control holds some of it or the client's transport is full; resume
        it otherwise.
        """
        producer = self._response_producer
        if producer is None:
            return
        paused = self._channel._paused or bool(self.outbound)
        if paused is not self._producer_paused:
            self._producer_paused = paused
            if paused:
                producer.pauseProducing()
            else:
                producer.resumeProducing()

    def send_interim(self, response: ResponseHead, headers: Headers) -> None:
        self._channel._h2.send_headers(self.stream_id, response_fields(response.status, headers))
        self._channel._write()

    def start_response(self, response: ResponseHead, headers: Headers) -> None:
        self._status = response.status
        # RFC 9110 6.4.1: a response to HEAD, a 204 and a 304 have no content.
        bodiless = self.request.method == b"HEAD" or response.status in (204, 304)
        self._channel._h2.send_headers(
            self.stream_id, response_fields(response.status, headers), end_stream=bodiless
        )
        self.end_sent = bodiless
        self._channel._write()

    def send_body(self, data: bytes) -> None:
        if not data or self.end_sent:
            return
        self._bytes_sent += len(data)
        self.outbound.append(data)
        self._channel._send(self)
        self._channel._write()

    def end_response(self) -> None:
        exchange, self.exchange = self.exchange, None
        self.log_access(exchange, self._status)
        self.ending = True
        self._channel._send(self)
        if not self.closed:
            # The rest waits for the client's window: it has the idle timeout to open it.
            self._wait(self._channel._idle_timeout)
        self._channel._write()

    def fail(self, status: int, headers: Headers = ()) -> None:
        """
        Answer with txproxy's own response, with C{headers} added to its
        fields, or reset the stream if a response had started.
        """
        exchange, self.exchange = self.exchange, None
        self.log_access(exchange, status)
        if self._status:
            self._reset(ErrorCodes.INTERNAL_ERROR)
            return
        response = local_response(status, header_value(self.request.headers, b"accept"))
        if headers:
            response = evolve(response, headers=response.headers + headers)
        self.respond(response)

    def respond(self, response: LocalResponse) -> None:
        """
        Answer with one of txproxy's own responses, such as a redirect; its
        C{close} means nothing here, as other streams go on.
        """
        request = self.request
        head_only = request.method == b"HEAD"
        self._status = response.status
        self._channel._h2.send_headers(
            self.stream_id, _local_fields(response), end_stream=head_only
        )
        self.end_sent = head_only
        if not head_only:
            self.outbound.append(response.body)
        self.ending = True
        self._channel._send(self)
        self._channel._write()

    def abort(self) -> None:
        """
        Reset the stream: the response broke off after it started.
        """
        exchange, self.exchange = self.exchange, None
        self.log_access(exchange, self._status)
        self._reset(ErrorCodes.INTERNAL_ERROR)

    def tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """
        Refuse a switch of protocols, which HTTP/2 has no way to carry (RFC
        9113 8.6): drop the server's connection and reset the stream.
        """
        upstream.transport.loseConnection()
        self.abort()

    def _reset(self, code: ErrorCodes) -> None:
        """
        End the stream with RST_STREAM and C{code}.
        """
        if not self.closed:
            self._channel._h2.reset_stream(self.stream_id, code)
            self._channel._forget(self)
            self._channel._write()

    def register_response_producer(self, producer: IPushProducer | None) -> None:
        self._response_producer = producer
        self._producer_paused = False
        if producer is not None:
            self.throttle()

    def wait_for_upstream(self, timeout: float) -> None:
        """
        Time the server out if it stays silent for C{timeout} seconds from now.
        """
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        """
        Set the stream's deadline C{timeout} seconds from now.

        The timer is moved only when it would fire too late; when it fires
        early it is set again for what is left, so that a deadline pushed back
        on every read costs no timer operation.
        """
        clock = self._channel.factory.clock
        self._deadline = clock.seconds() + timeout
        if self._timer is None:
            self._timer = clock.callLater(timeout, self._check_deadline)
        elif self._timer.getTime() > self._deadline:
            self._timer.reset(timeout)

    def _check_deadline(self) -> None:
        """
        The timer fired: time the server out, or a client that opens no window
        for a complete response, unless the deadline moved.
        """
        self._timer = None
        clock = self._channel.factory.clock
        remaining = self._deadline - clock.seconds()
        if remaining > 0:
            self._timer = clock.callLater(remaining, self._check_deadline)
        elif self.exchange is not None:
            self.exchange.timed_out()
        else:
            # The response is complete but the client opened no window for it.
            self._reset(ErrorCodes.CANCEL)

    def cancel_timer(self) -> None:
        """
        Forget the stream's deadline.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def log_access(self, exchange: ExchangeLike | None, status: int) -> None:
        """
        Write the stream's access log record, as L{txproxy.http.channel.ClientChannel} does
        for a request.

        @param exchange: the exchange that forwarded the request, or L{None}
            when txproxy answered it itself.
        @param status: the status the client was sent.
        """
        channel = self._channel
        access_log = channel.factory.access_log
        if access_log is None:
            return
        now = channel.factory.clock.seconds()
        access_log.log(
            AccessRecord.for_request(
                self.request,
                client=channel.client_ip or "-",
                time=now,
                status=status,
                bytes_sent=self._bytes_sent,
                upstream=exchange.upstream_address if exchange is not None else "-",
                duration=now - self._started,
                pool=exchange.pool_name if exchange is not None else None,
            )
        )


@implementer(IPushProducer)
class H2Channel(Protocol):
    """
    One HTTP/2 client connection: a thin protocol over h2's connection, as
    C{twisted.web._http2.H2Connection} is, with an L{H2Stream} per request.

    The channel is its transport's producer: while the client's transport
    cannot take more, it stops reading from the client and pauses every
    stream's server. That bounds what a client that does not read can make
    txproxy buffer, control frames included (CVE-2019-9512, 9515).

    @ivar peer: the client's address.
    @ivar client_ip: the client's address without its port, for the
        forwarded headers and the access log.
    @ivar pick_context: what the balancers know of this client.
    @ivar connection_headers: the fields added to every request forwarded,
        which tell of the client's certificate.
    """

    _log = Logger()
    factory: HTTPFactory
    # Set by makeConnection before any other method is called.
    transport: IProxyTransport

    def __init__(self) -> None:
        self._h2 = H2Connection(config=_CONFIG)
        self._streams: dict[int, H2Stream] = {}
        self._blocked: dict[int, H2Stream] = {}
        self._paused = False
        self._closing = False
        self._last_stream: int | None = None
        self._idle_timer: IDelayedCall | None = None
        self._idle_timeout = 0.0
        self._reset_tokens = _RESET_BURST
        self._reset_time = 0.0

    def connectionMade(self) -> None:
        factory = self.factory
        factory.channels.add(self)
        self.peer = self.transport.getPeer()
        self.client_ip = str(getattr(self.peer, "host", ""))
        self.pick_context = PickContext(client=self.peer, hash_key=client_hash_key(self.peer))
        self.connection_headers = factory.connection_headers(self.transport)
        assert factory.limits.client_idle_timeout is not None
        self._idle_timeout = factory.limits.client_idle_timeout
        self._reset_time = factory.clock.seconds()
        self.transport.registerProducer(self, True)
        if ITCPTransport.providedBy(self.transport):
            # Small frames (WINDOW_UPDATE, PING) must not wait for Nagle's algorithm.
            self.transport.setTcpNoDelay(True)
        h2 = self._h2
        h2.local_settings = settings = _local_settings(factory.limits)
        # h2 applies a setting once the client acknowledges a change of it,
        # and these are not changes but the first values.
        h2.decoder.max_header_list_size = settings[SettingCodes.MAX_HEADER_LIST_SIZE]
        h2.initiate_connection()
        h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._write()
        self._start_idle()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self._h2.receive_data(data)
        except ProtocolError as error:
            # h2 has queued a GOAWAY with the error's code.
            self._log.debug(
                "HTTP/2 protocol error from {client}: {error}", client=self.peer, error=error
            )
            self._terminate()
            return
        resets = None
        for event in events:
            if isinstance(event, StreamReset | ConnectionTerminated):
                # h2 has closed these streams, or the connection, already: act
                # on that first, so that no earlier event of this read makes an
                # exchange write to a closed stream.
                resets = self._ended_first(events)
                break
        for event in events:
            if self._closing:
                return
            if isinstance(event, DataReceived):
                self._data_received(event)
            elif isinstance(event, RequestReceived):
                if resets is None or event.stream_id not in resets:
                    self._request_received(event)
            elif isinstance(event, StreamEnded):
                self._stream_ended(event)
            elif isinstance(event, WindowUpdated):
                if event.stream_id:
                    stream = self._blocked.get(event.stream_id)
                    if stream is not None:
                        self._send(stream)
                else:
                    self._send_blocked()
            elif isinstance(event, RemoteSettingsChanged):
                # A new initial window or frame size changes what may be sent.
                self._send_blocked()
        self._write()

    def _ended_first(self, events: list[Event]) -> set[int]:
        """
        Act on the streams the client reset and on its GOAWAY.

        @return: the identifiers of the streams reset.
        """
        resets: set[int] = set()
        for event in events:
            if isinstance(event, ConnectionTerminated):
                # h2 sends nothing more once the client has said GOAWAY.
                self._terminate()
                return resets
            if isinstance(event, StreamReset):
                resets.add(event.stream_id)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    self._forget(stream)
                    exchange, stream.exchange = stream.exchange, None
                    if exchange is not None:
                        exchange.client_lost()
                if not self._reset_allowed():
                    self._log.info("client {client} reset too many streams", client=self.peer)
                    self._h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
                    self._terminate()
                    return resets
        return resets

    def _reset_allowed(self) -> bool:
        """
        Take a token from the bucket of stream resets.
        """
        now = self.factory.clock.seconds()
        tokens = self._reset_tokens + max(0.0, now - self._reset_time) * _RESET_RATE
        self._reset_time = now
        self._reset_tokens = min(_RESET_BURST, tokens) - 1
        return self._reset_tokens >= 0

    def _request_received(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if not self.factory.accepting or (
            self._last_stream is not None and stream_id > self._last_stream
        ):
            # RFC 9113 8.7: refused streams were not processed; clients retry them.
            self._h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        ended = event.stream_ended is not None
        stream = H2Stream(self, stream_id, ended)
        if not self._streams:
            self._cancel_idle()
        self._streams[stream_id] = stream
        head = read_request_head(event.headers, ended, self.factory.limits.max_headers or 0)
        if isinstance(head, BadMessage):
            self._log.debug(
                "bad request from {client}: {reason}", client=self.peer, reason=head.reason
            )
            stream.fail(head.status)
            return
        stream.request = head
        exchange = self.factory.exchange_for(
            stream, head, self.pick_context, self.client_ip, self.connection_headers
        )
        if isinstance(exchange, int):
            stream.fail(exchange)
        elif isinstance(exchange, LocalResponse):
            stream.log_access(None, exchange.status)
            stream.respond(exchange)
        else:
            stream.exchange = exchange
            exchange.start()

    def _data_received(self, event: DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        length = event.flow_controlled_length
        if stream is None or stream.exchange is None:
            # Nobody reads it: give the credit back at once.
            self._acknowledge(event.stream_id, length)
            return
        if event.data:
            # An empty chunk upstream would end a chunked body early.
            stream.exchange.request_body(event.data)
        if stream.reading_paused and not stream.closed:
            stream.unacknowledged += length
        else:
            self._acknowledge(event.stream_id, length)

    def _acknowledge(self, stream_id: int, length: int) -> None:
        if length:
            self._h2.acknowledge_received_data(length, stream_id)

    def _stream_ended(self, event: StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.request_ended = True
            if stream.exchange is not None:
                stream.exchange.request_end()

    def _send(self, stream: H2Stream) -> None:
        """
        Send what the flow-control windows allow of a stream's waiting body,
        then the end of its response once it is all sent.
        """
        h2 = self._h2
        stream_id = stream.stream_id
        outbound = stream.outbound
        sent = False
        while outbound:
            room = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if room <= 0:
                break
            data = outbound[0]
            if len(data) > room:
                view = memoryview(data)
                outbound[0] = view[room:]
                data = view[:room]
            else:
                outbound.popleft()
            h2.send_data(stream_id, data)
            sent = True
        if outbound:
            self._blocked[stream_id] = stream
            if sent and stream.ending:
                stream._wait(self._idle_timeout)
        else:
            self._blocked.pop(stream_id, None)
            if stream.ending:
                if not stream.end_sent:
                    h2.end_stream(stream_id)
                    stream.end_sent = True
                if not stream.request_ended:
                    # RFC 9113 8.1: the response is complete; the client may stop sending.
                    h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
                self._forget(stream)
                return
        stream.throttle()

    def _send_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            self._send(stream)

    def _forget(self, stream: H2Stream) -> None:
        """
        The stream is over for txproxy: release what it holds.
        """
        stream.closed = True
        stream.cancel_timer()
        stream_id = stream.stream_id
        if stream.unacknowledged:
            # What was read is discarded; the connection's window needs it back.
            self._acknowledge(stream_id, stream.unacknowledged)
            stream.unacknowledged = 0
        del self._streams[stream_id]
        self._blocked.pop(stream_id, None)
        if not self._streams and not self._closing:
            if self._last_stream is not None:
                self._close(ErrorCodes.NO_ERROR)
            else:
                self._start_idle()

    def _write(self) -> None:
        """
        Write what h2 has made ready to send.
        """
        data = self._h2.data_to_send()
        if data:
            self.transport.write(data)

    def go_away(self) -> None:
        """
        Shut the connection down gracefully, as when the listener stops.

        The client is told, with a GOAWAY naming the last stream it opened,
        that no new stream will be served (RFC 9113 6.8); those already open
        are answered, and the connection then closes.
        """
        if self._closing or self._last_stream is not None:
            return
        if not self._streams:
            self._close(ErrorCodes.NO_ERROR)
            return
        self._last_stream = self._h2.highest_inbound_stream_id
        self._write()
        # Written past h2, whose GOAWAY would end the connection at once.
        goaway = GoAwayFrame(0, last_stream_id=self._last_stream, error_code=ErrorCodes.NO_ERROR)
        self.transport.write(goaway.serialize())

    def _close(self, code: ErrorCodes) -> None:
        """
        Send GOAWAY with C{code} and close the connection.
        """
        # RFC 9113 6.8: a second GOAWAY must not name a later stream than the first.
        self._h2.close_connection(code, last_stream_id=self._last_stream)
        self._terminate()

    def _terminate(self) -> None:
        """
        Write what is pending, close the connection and abandon every stream.
        """
        if self._closing:
            return
        self._closing = True
        self._cancel_idle()
        self._write()
        # A transport that drains with its producer paused would resume the
        # producer rather than close: unregister first.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self._drop_streams()

    def _drop_streams(self) -> None:
        """
        Abandon every stream: the client can be sent nothing more.
        """
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        for stream in streams:
            stream.closed = True
            stream.cancel_timer()
            exchange, stream.exchange = stream.exchange, None
            if exchange is not None:
                exchange.client_lost()

    def _start_idle(self) -> None:
        self._idle_timer = self.factory.clock.callLater(self._idle_timeout, self._idle_expired)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        self._log.debug("closing idle HTTP/2 connection of {client}", client=self.peer)
        self._close(ErrorCodes.NO_ERROR)

    def pauseProducing(self) -> None:
        self._paused = True
        self.transport.pauseProducing()
        for stream in list(self._streams.values()):
            stream.throttle()

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._closing:
            self.transport.resumeProducing()
        for stream in list(self._streams.values()):
            stream.throttle()

    def stopProducing(self) -> None:
        """
        Nothing to do: the connection is closing, and L{connectionLost} follows.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._cancel_idle()
        self._drop_streams()
        self.factory.channel_ended(self)
