# -*- test-case-name: tests.test_http_channel -*-
"""
The client side of an HTTP/1.1 listener: read requests, route them, write responses.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy.http.accesslog import AccessRecord
from txproxy.http.events import (
    BadMessage,
    BodyChunk,
    EndOfMessage,
    Headers,
    RequestEvent,
    RequestHead,
    ResponseHead,
)
from txproxy.http.exchange import ExchangeLike
from txproxy.http.headers import header_value
from txproxy.http.responses import LocalResponse, local_response
from txproxy.http.upstream import UpstreamProtocol
from txproxy.http.writing import LAST_CHUNK, ResponseFraming, chunk, interim_head
from txproxy.interfaces import IProxyTransport, PickContext
from txproxy.tcp import RelayEnd, client_hash_key

if TYPE_CHECKING:
    from txproxy.http.listener import HTTPFactory


class Waiting(enum.Enum):
    """
    What the connection waits for, which decides its timeout.
    """

    IDLE = "idle"  # between requests: client_idle_timeout, then close quietly
    HEAD = "head"  # part of a head has come: client_header_timeout, then 408
    EXCHANGE = "exchange"  # a request is in flight: upstream_response_timeout, then 504


@implementer(IPushProducer)
class _ClientReading:
    """
    Pauses reading from the client while any reason holds: an upstream
    connection whose buffer is full or not yet there, or a pipelined request
    waiting for the response ahead of it.
    """

    def __init__(self, channel: ClientChannel) -> None:
        self._channel = channel
        # Immutable, so that a connection never paused allocates no set.
        self._reasons: frozenset[str] = frozenset()

    def pause(self, reason: str) -> None:
        if not self._reasons and self._channel.transport is not None:
            self._channel.transport.pauseProducing()
        self._reasons |= {reason}

    def resume(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons -= {reason}
        if not self._reasons and self._channel.transport is not None:
            self._channel.transport.resumeProducing()

    def pauseProducing(self) -> None:
        self.pause("upstream")

    def resumeProducing(self) -> None:
        self.resume("upstream")

    def stopProducing(self) -> None:
        """
        Nothing to do: the upstream connection that paused us is gone, and the
        exchange decides what that means for the client.
        """


@implementer(IHandshakeListener)
class ClientChannel(Protocol):
    """
    One client connection: requests are read with a L{RequestReader}, routed,
    and handed one at a time to an L{Exchange}; pipelined requests wait their
    turn with the connection paused.

    A client that chose HTTP/2, by ALPN or (where the listener takes h2c) by
    starting with the HTTP/2 preface, is handed to an L{H2Channel} before its
    first request.
    """

    _log = Logger()
    factory: HTTPFactory
    # Set by makeConnection before any other method is called.
    transport: IProxyTransport

    def __init__(self) -> None:
        # Pipelined requests are few: a list costs an idle connection less than a deque.
        self._events: list[RequestEvent] = []
        self._exchange: ExchangeLike | None = None
        self._request: RequestHead | None = None
        self._framing: ResponseFraming | None = None
        self._discarding = False
        self._processing = False
        self._tunnel: RelayEnd | None = None
        self._waiting = Waiting.IDLE
        self._partial = False
        self._deadline = 0.0
        self._timer: IDelayedCall | None = None
        self._started = 0.0
        self._status = 0
        self._bytes_sent = 0
        self.producer = _ClientReading(self)
        self.connection_headers: Headers | None = None
        # Whether the first bytes may still turn out to be the HTTP/2 preface.
        self._sniffing = False
        self._sniffed = b""

    def connectionMade(self) -> None:
        factory = self.factory
        factory.channels.add(self)
        self.reader = factory.new_reader()
        self.peer = self.transport.getPeer()
        self.client_ip = str(getattr(self.peer, "host", ""))
        # What the balancer may know of this client, made once per connection.
        self.pick_context = PickContext(client=self.peer, hash_key=client_hash_key(self.peer))
        self._sniffing = factory.h2c
        if ITCPTransport.providedBy(self.transport):
            # As nginx's tcp_nodelay: a response must not wait for the ACK of
            # what went before it (over TLS 1.3, the session tickets).
            self.transport.setTcpNoDelay(True)
        assert factory.limits.client_header_timeout is not None
        self._wait(Waiting.HEAD, factory.limits.client_header_timeout)

    def handshakeCompleted(self) -> None:
        """
        TLS is up: hand the connection over if ALPN chose HTTP/2.
        """
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self._hand_to_h2(b"")

    def dataReceived(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel.dataReceived(data)
            return
        if self._sniffing:
            from txproxy.http.h2 import is_h2_preface

            data = self._sniffed + data
            preface = is_h2_preface(data)
            if preface is None:
                self._sniffed = data
                return
            self._sniffing = False
            self._sniffed = b""
            if preface:
                self._hand_to_h2(data)
                return
        self._events.extend(self.reader.feed(data))
        self._process()
        if self._waiting is not Waiting.EXCHANGE and self.reader.in_head:
            # Part of a head came, not all of it: it has client_header_timeout.
            self._partial = True
            if self._waiting is Waiting.IDLE:
                assert self.factory.limits.client_header_timeout is not None
                self._wait(Waiting.HEAD, self.factory.limits.client_header_timeout)

    def _hand_to_h2(self, data: bytes) -> None:
        """
        Give the connection to an L{H2Channel}, with what was read of it.

        The TLS wrapper or the TCP connection delivers to whichever protocol
        it holds, so the new channel takes this one's place there.
        """
        # h2 is loaded only once a client speaks HTTP/2.
        from txproxy.http.h2 import H2Channel

        self._cancel_timer()
        h2 = H2Channel()
        h2.factory = self.factory
        transport = self.transport
        if hasattr(transport, "wrappedProtocol"):
            transport.wrappedProtocol = h2
        else:
            transport.protocol = h2  # type: ignore[attr-defined]
        h2.makeConnection(transport)  # type: ignore[no-untyped-call]
        # Only now, with the new channel counted, so that a stopping
        # listener never sees its connections all gone in between.
        self.factory.channels.discard(self)
        if data:
            h2.dataReceived(data)

    def go_away(self) -> None:
        """
        Close the connection gracefully, as when the listener stops: at once
        if no request is in flight, else once its response is written (the
        factory no longer C{accepting}, the response ends the connection). A
        tunnel goes on until either side closes it.
        """
        if self._request is None and self._tunnel is None:
            self._cancel_timer()
            self.transport.loseConnection()

    def _process(self) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            events = self._events
            while events and self.transport is not None and not self.transport.disconnecting:
                event = events[0]
                if isinstance(event, RequestHead):
                    if self._request is not None:
                        self.producer.pause("pipeline")
                        return
                    del events[0]
                    self._start(event)
                    continue
                del events[0]
                if isinstance(event, BodyChunk):
                    if self._exchange is not None:
                        self._exchange.request_body(event.data)
                elif isinstance(event, EndOfMessage):
                    self._request_read()
                elif isinstance(event, BadMessage):
                    self._bad(event)
        finally:
            self._processing = False

    def _start(self, head: RequestHead) -> None:
        self._request = head
        # No deadline until the exchange sends upstream: connecting has its own.
        self._waiting = Waiting.EXCHANGE
        self._deadline = math.inf
        self._partial = False
        self._started = self.factory.clock.seconds()
        self._status = 0
        self._bytes_sent = 0
        self._discarding = False
        factory = self.factory
        if self.connection_headers is None:
            self.connection_headers = factory.connection_headers(self.transport)
        exchange = factory.exchange_for(
            self, head, self.pick_context, self.client_ip, self.connection_headers
        )
        if isinstance(exchange, int):
            self._discarding = head.has_body
            self.fail(exchange)
        elif isinstance(exchange, LocalResponse):
            self._discarding = head.has_body
            self._log_access("-", exchange.status)
            self._send(exchange)
        else:
            self._exchange = exchange
            exchange.start()

    def _request_read(self) -> None:
        if self._exchange is not None:
            self._exchange.request_end()
        elif self._discarding:
            self._discarding = False

    def _bad(self, event: BadMessage) -> None:
        self._log.debug(
            "bad request from {client}: {reason}", client=self.peer, reason=event.reason
        )
        if self._exchange is not None and self._framing is not None:
            self.abort()
            return
        if self._exchange is not None:
            self._exchange.client_lost()
            self._exchange = None
        if self._request is None:
            # No head could be read: the access log shows the request as "-".
            self._request = RequestHead(b"", b"", b"1.1", ())
            self._started = self.factory.clock.seconds()
            self._bytes_sent = 0
        self._log_access("-", event.status)
        self._send_local(event.status, close=True)

    def send_interim(self, response: ResponseHead, headers: Headers) -> None:
        request = self._request
        if request is not None and request.version == b"1.1":
            self.transport.write(interim_head(response, headers))

    def start_response(self, response: ResponseHead, headers: Headers) -> None:
        request = self._request
        assert request is not None
        self._status = response.status
        keep_alive = request.keep_alive and not request.upgrade and self.factory.accepting
        self._framing = ResponseFraming.choose(request, response, keep_alive)
        self.transport.write(self._framing.head(response, headers, request.version))

    def send_body(self, data: bytes) -> None:
        self._bytes_sent += len(data)
        assert self._framing is not None
        self.transport.write(chunk(data) if self._framing.chunked else data)

    def end_response(self) -> None:
        framing = self._framing
        assert framing is not None
        if framing.chunked:
            self.transport.write(LAST_CHUNK)
        exchange = self._exchange
        assert exchange is not None
        self._log_access(exchange.upstream_address)
        self._next(close=framing.close or not exchange.request_ended)

    def fail(self, status: int, headers: Headers = ()) -> None:
        """
        Answer the current request with txproxy's own response, with
        C{headers} added to its fields.
        """
        if self._exchange is not None:
            self._log_access(self._exchange.upstream_address, status)
        else:
            self._log_access("-", status)
        request = self._request
        unread_body = self._discarding or (
            self._exchange is not None and not self._exchange.request_ended
        )
        self._send_local(
            status, close=unread_body or not (request and request.keep_alive), headers=headers
        )

    def _send_local(self, status: int, close: bool, headers: Headers = ()) -> None:
        request = self._request
        accept = header_value(request.headers, b"accept") if request is not None else None
        response = local_response(status, accept, close=close or None)
        if headers:
            response = evolve(response, headers=response.headers + headers)
        self._send(response)

    def _send(self, response: LocalResponse) -> None:
        request = self._request
        self.transport.write(
            response.to_bytes(head_only=request is not None and request.method == b"HEAD")
        )
        self._next(close=response.close)

    def abort(self) -> None:
        """
        Cut the connection: a response broke off after it started.
        """
        if self._exchange is not None:
            self._log_access(self._exchange.upstream_address)
        self.transport.loseConnection()
        self._next(close=True)

    def _next(self, close: bool) -> None:
        """
        The current exchange is over: close, or get ready for the next request.
        """
        self._exchange = None
        self._request = None
        self._framing = None
        if close or not self.factory.accepting:
            self._cancel_timer()
            self.transport.loseConnection()
            return
        if self._discarding:
            return
        assert self.factory.limits.client_idle_timeout is not None
        self._wait(Waiting.IDLE, self.factory.limits.client_idle_timeout)
        self.producer.resume("pipeline")
        self._process()

    def tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """
        Relay raw bytes both ways, as after a C{101 Switching Protocols}.
        """
        self._log_access(upstream.server.address)
        self._exchange = None
        self._cancel_timer()
        client_end, upstream_end = RelayEnd(), RelayEnd()
        client_end.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        upstream_end.makeConnection(upstream.transport)  # type: ignore[no-untyped-call]
        client_end.join(upstream_end)
        self._tunnel, upstream.tunnel = client_end, upstream_end
        if data:
            self.transport.write(data)
        leftover = self.reader.detach()
        if leftover:
            upstream.transport.write(leftover)
        self.producer.resume("pipeline")
        self.producer.resume("upstream")

    def register_response_producer(self, producer: IPushProducer | None) -> None:
        if producer is None:
            self.transport.unregisterProducer()
        else:
            self.transport.registerProducer(producer, True)

    def _log_access(self, upstream: str, status: int | None = None) -> None:
        access_log = self.factory.access_log
        request = self._request
        if access_log is None or request is None:
            return
        pool = self._exchange.pool_name if self._exchange is not None else None
        now = self.factory.clock.seconds()
        access_log.log(
            AccessRecord.for_request(
                request,
                client=self.client_ip or "-",
                time=now,
                status=status or self._status,
                bytes_sent=self._bytes_sent,
                upstream=upstream,
                duration=now - self._started,
                pool=pool,
            )
        )

    def _wait(self, waiting: Waiting, timeout: float) -> None:
        """
        Wait for C{waiting} at most C{timeout} seconds from now.

        One timer serves every wait of the connection: it is moved only when
        the new deadline is earlier than its time, and otherwise, when it
        fires early, it is set again for what is left.
        """
        self._waiting = waiting
        clock = self.factory.clock
        self._deadline = clock.seconds() + timeout
        if self._timer is None:
            self._timer = clock.callLater(timeout, self._check_deadline)
        elif self._timer.getTime() > self._deadline:
            self._timer.reset(timeout)

    def wait_for_upstream(self, timeout: float) -> None:
        """
        Time the server out if it stays silent for C{timeout} seconds from now.
        """
        self._wait(Waiting.EXCHANGE, timeout)

    def _check_deadline(self) -> None:
        self._timer = None
        clock = self.factory.clock
        remaining = self._deadline - clock.seconds()
        if remaining > 0:
            if remaining != math.inf:
                self._timer = clock.callLater(remaining, self._check_deadline)
            return
        if self._waiting is Waiting.EXCHANGE:
            if self._exchange is not None:
                self._exchange.timed_out()
        elif self._waiting is Waiting.HEAD and self._partial:
            self._send_local(408, close=True)
        else:
            self.transport.loseConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self.factory.channel_ended(self)
        if self._tunnel is not None and self._tunnel.peer is not None:
            self._tunnel.peer.transport.loseConnection()
        if self._exchange is not None:
            self._exchange.client_lost()
            self._exchange = None
