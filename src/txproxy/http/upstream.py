# -*- test-case-name: tests.test_http_upstream -*-
"""
Upstream HTTP/1.1 connections, and the cache of idle ones kept alive for reuse.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol
from typing import cast

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from txproxy.endpoints import connect_upstream
from txproxy.http.events import ResponseEvent
from txproxy.http.parsing import ResponseReader
from txproxy.interfaces import IProxyTransport
from txproxy.pool import ServerState, ServerStatus
from txproxy.tcp import RelayEnd

_NO_NEW_WORK = frozenset({ServerStatus.DRAINING, ServerStatus.DISABLED})


class ResponseSink(TypingProtocol):
    """
    What an upstream connection hands the response it reads to.
    """

    def response_events(self, events: list[ResponseEvent]) -> None:
        """
        Take the events read from the server.
        """

    def upstream_lost(self, upstream: UpstreamProtocol, reason: Failure) -> None:
        """
        The connection closed while this sink was using it.
        """


class UpstreamProtocol(Protocol):
    """
    One connection to one server: carries one exchange at a time.

    @ivar server: the server it is connected to.
    @ivar sink: the exchange now using it, or L{None} while idle.
    @ivar received: whether any byte of the current response has arrived.
    @ivar requests: how many requests it has carried.
    @ivar tunnel: after a protocol switch, its end of the raw relay.
    @ivar tls: how it speaks TLS to the server, or L{None}: the server's
        C{tls} when it connected, which a reload may have replaced since.
    """

    _log = Logger()
    # Set by makeConnection before any other method is called.
    transport: IProxyTransport
    tunnel: RelayEnd | None = None

    def __init__(self, server: ServerState, idle: IdleUpstreams) -> None:
        self.server = server
        self.reader = ResponseReader()
        self.sink: ResponseSink | None = None
        self.received = False
        self.requests = 0
        self.idle_since = 0.0
        self.tls = server.tls
        self._idle = idle

    def use(self, sink: ResponseSink, method: bytes) -> None:
        """
        Give the connection to C{sink} for one request with C{method}.
        """
        self.sink = sink
        self.received = False
        self.requests += 1
        self.reader.expect(method)

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.dataReceived(data)
            return
        if self.sink is None:
            # RFC 9112 section 9.3.2: nothing may arrive on an idle connection.
            self._idle.discard(self)
            return
        self.received = True
        self.sink.response_events(self.reader.feed(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.tunnel is not None and self.tunnel.peer is not None:
            self.tunnel.peer.transport.loseConnection()
            return
        if reason.check(SSL.Error, VerificationError):  # type: ignore[no-untyped-call]
            self._log.warn(
                "TLS with server {server} failed: {reason}",
                server=self.server.address,
                reason=reason.getErrorMessage(),
            )
        sink, self.sink = self.sink, None
        if sink is None:
            self._idle.forget(self)
            return
        events = self.reader.feed_eof()
        if events:
            sink.response_events(events)
        sink.upstream_lost(self, reason)


SURPLUS_GRACE = 1.0
"""
Seconds an idle connection past a pool's C{keepalive} stays open unused before it closes.
"""


class IdleUpstreams:
    """
    Idle upstream connections, kept alive per server for the next request.

    C{max_idle} are kept per server, the most recently used first; each
    closes after C{idle_timeout} seconds unused, which should be shorter than
    the server's own keep-alive timeout so that txproxy closes first.

    Past C{max_idle}, a connection is not closed the moment it goes idle but
    once it has stayed idle for L{SURPLUS_GRACE} (as HAProxy purges its idle
    connections over time rather than at once): under load, responses come
    back in batches, so the idle count of a server swings from none to every
    connection in use within one turn of the reactor, and closing the surplus
    at once meant connecting again for the next batch (a tenth of txproxy's
    CPU a request at 50 connections and nginx's C{keepalive 32}).

    Expiry costs no timer per request: each connection notes when it went
    idle, a connection past its time is never handed out, and one timer, set
    for the earliest expiry, closes those that expired.

    A connection is kept only while its server may take new requests and
    speaks the TLS it connected with: one to a server draining or disabled
    (one a reload or an operator removes), or whose TLS a reload replaced,
    closes once its exchange is over instead.
    """

    _log = Logger()

    def __init__(
        self, reactor: IReactorTCP, clock: IReactorTime, max_idle: int, idle_timeout: float
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        # Per server, oldest first: expired connections are at the front.
        self._idle: dict[str, list[UpstreamProtocol]] = {}
        self._sweep: IDelayedCall | None = None
        self._trim: IDelayedCall | None = None
        # Connections close is waiting for, and who waits.
        self._closing: set[UpstreamProtocol] = set()
        self._closed: list[Deferred[None]] = []

    def take(self, server: ServerState) -> UpstreamProtocol | None:
        """
        An idle connection to C{server}, taken out of the cache, if there is one.
        """
        idle = self._idle.get(server.address)
        if not idle:
            return None
        upstream = idle.pop()
        if self._clock.seconds() - upstream.idle_since >= self.idle_timeout:
            # The newest has expired, so have the others.
            upstream.transport.loseConnection()
            for older in idle:
                older.transport.loseConnection()
            idle.clear()
            return None
        return upstream

    def connect(self, server: ServerState, timeout: float) -> Deferred[UpstreamProtocol]:
        """
        Open a new connection to C{server}.
        """
        tls = server.tls

        def build() -> UpstreamProtocol:
            upstream = UpstreamProtocol(server, self)
            # The TLS it connects with, should a reload replace the server's meanwhile.
            upstream.tls = tls
            return upstream

        factory = Factory.forProtocol(build)
        factory.noisy = False
        return cast(
            "Deferred[UpstreamProtocol]", connect_upstream(self._reactor, server, factory, timeout)
        )

    def put(self, upstream: UpstreamProtocol) -> None:
        """
        Keep a connection whose exchange is over, unless its server takes no
        new work or C{max_idle} is 0.
        """
        upstream.sink = None
        server = upstream.server
        if server.status in _NO_NEW_WORK or upstream.tls is not server.tls:
            upstream.transport.loseConnection()
            return
        if not self.max_idle:
            upstream.transport.loseConnection()
            return
        idle = self._idle.setdefault(server.address, [])
        upstream.idle_since = self._clock.seconds()
        idle.append(upstream)
        if self._sweep is None:
            self._sweep = self._clock.callLater(self.idle_timeout, self._expire)
        if self._trim is None and len(idle) > self.max_idle:
            self._trim = self._clock.callLater(SURPLUS_GRACE, self._trim_surplus)

    def _trim_surplus(self) -> None:
        """
        Close the connections past C{max_idle} of each server that stayed
        idle for L{SURPLUS_GRACE}, the oldest first; come back for the rest.
        """
        self._trim = None
        now = self._clock.seconds()
        earliest = None
        for idle in self._idle.values():
            while len(idle) > self.max_idle and now - idle[0].idle_since >= SURPLUS_GRACE:
                idle.pop(0).transport.loseConnection()
            if len(idle) > self.max_idle and (earliest is None or idle[0].idle_since < earliest):
                earliest = idle[0].idle_since
        if earliest is not None:
            self._trim = self._clock.callLater(earliest + SURPLUS_GRACE - now, self._trim_surplus)

    def _expire(self) -> None:
        """
        Close the connections idle for C{idle_timeout}; come back for the next.
        """
        self._sweep = None
        now = self._clock.seconds()
        earliest = None
        for idle in self._idle.values():
            while idle and now - idle[0].idle_since >= self.idle_timeout:
                idle.pop(0).transport.loseConnection()
            if idle and (earliest is None or idle[0].idle_since < earliest):
                earliest = idle[0].idle_since
        if earliest is not None:
            self._sweep = self._clock.callLater(earliest + self.idle_timeout - now, self._expire)

    def configure(self, max_idle: int, idle_timeout: float) -> None:
        """
        Take new settings, as a reload of the pool's C{keepalive} and
        C{keepalive_timeout} does: connections past the new C{max_idle} of a
        server close now, the oldest first; the new C{idle_timeout} applies
        to every connection kept.
        """
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        for idle in self._idle.values():
            while len(idle) > max_idle:
                idle.pop(0).transport.loseConnection()

    def drop(self, address: str) -> None:
        """
        Close the idle connections to the server at C{address} now, as when
        it leaves its pool or its TLS changes: none is handed out again.
        """
        for upstream in self._idle.pop(address, []):
            upstream.transport.loseConnection()

    def discard(self, upstream: UpstreamProtocol) -> None:
        """
        Close an idle connection, forgetting it at once: it is never handed
        out again while its close completes.
        """
        self.forget(upstream)
        upstream.transport.loseConnection()

    def forget(self, upstream: UpstreamProtocol) -> None:
        """
        Drop an idle connection that closed.
        """
        idle = self._idle.get(upstream.server.address)
        if idle and upstream in idle:
            idle.remove(upstream)
        if upstream in self._closing:
            self._closing.discard(upstream)
            if not self._closing:
                waiting, self._closed = self._closed, []
                for closed in waiting:
                    closed.callback(None)

    def close(self) -> Deferred[None]:
        """
        Close every idle connection at once: none has anything to send.

        @return: a L{Deferred} that fires once they are all gone.
        """
        for timer in (self._sweep, self._trim):
            if timer is not None:
                timer.cancel()
        self._sweep = self._trim = None
        for idle in list(self._idle.values()):
            for upstream in idle:
                self._closing.add(upstream)
            idle.clear()
        if not self._closing:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closed.append(closed)
        for upstream in list(self._closing):
            upstream.transport.abortConnection()
        return closed

    def count(self, server: ServerState) -> int:
        """
        How many idle connections to C{server} are kept.
        """
        return len(self._idle.get(server.address, ()))
