# -*- test-case-name: tests.test_health -*-
"""
Health probes: one check of one server, over TCP or HTTP, as thin protocols.

L{IHealthCheck} is what L{txproxy.health.HealthChecker} asks of a probe;
L{TCPConnectCheck} passes once a connection (and TLS handshake) opens, and
L{HTTPCheck} judges one response by its status and body. Each probe closes
its connection and times out by itself; scheduling and rise/fall counting
live in L{txproxy.health}.
"""

from __future__ import annotations

from urllib.parse import quote

from attrs import define
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import (
    IHandshakeListener,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from txproxy.config import HealthCheck
from txproxy.endpoints import server_endpoint
from txproxy.http.events import BadMessage, BodyChunk, EndOfMessage, ResponseEvent, ResponseHead
from txproxy.http.parsing import ResponseReader
from txproxy.pool import ServerState

MAX_BODY = 65536
"""
The most bytes of a response body an HTTP check reads looking for its text.
"""


@define
class ProbeFailed(Exception):
    """
    A probe found a server unhealthy.

    @ivar reason: why, in a few words: C{"connection refused"},
        C{"status 500 not in 200-399"}.
    """

    reason: str

    def __str__(self) -> str:
        return self.reason


class IHealthCheck(Interface):
    """
    One probe of one server; scheduling and rise/fall counting live in
    L{HealthChecker}.
    """

    def probe(server: ServerState) -> Deferred[str]:  # noqa: N805
        """
        Probe a server once, giving up by itself after the check's timeout.

        @return: fires with what passed, in a few words (C{"status 200"}),
            or fails with L{ProbeFailed} saying why the server is unhealthy.
        """


def failure_reason(reason: Failure, timeout: float) -> str:
    """
    Describe why a probe failed, in a few words and without a traceback.
    """
    value = reason.value
    if isinstance(value, ProbeFailed):
        return value.reason
    if isinstance(value, DeferredTimeoutError | error.TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(value, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, CancelledError):
        return "cancelled"
    return f"{type(value).__name__}: {reason.getErrorMessage()}"


class _Probe(Protocol):
    """
    One probe's connection: it reaches a verdict, closes, and fires C{done}
    once closed, so that no probe leaves a connection behind.

    Cancelling C{done} (the probe's timeout, or its checker stopping) aborts
    the connection at once, keeping a verdict already reached.

    @ivar done: fires with what passed, or fails with L{ProbeFailed}.
    """

    transport: ITCPTransport | None

    def __init__(self) -> None:
        self.done: Deferred[str] = Deferred(self._cancel)
        self._verdict: str | ProbeFailed | None = None
        self._closed = False

    def decide(self, verdict: str | ProbeFailed) -> None:
        """
        Settle the probe, passed with a description or failed, and close.
        """
        if self._verdict is not None:
            return
        self._verdict = verdict
        if self.transport is not None and not self._closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        if self._verdict is None:
            self._verdict = self.lost(reason)
        self._fire()

    def lost(self, reason: Failure) -> ProbeFailed:
        """
        The verdict when the connection closes before one was reached.
        """
        return ProbeFailed(f"connection closed: {reason.getErrorMessage()}")

    def _fire(self) -> None:
        verdict = self._verdict
        if self.done.called or verdict is None:
            return
        if isinstance(verdict, ProbeFailed):
            self.done.errback(verdict)
        else:
            self.done.callback(verdict)

    def _cancel(self, done: Deferred[str]) -> None:
        if self.transport is not None and not self._closed:
            self.transport.abortConnection()
        self._fire()


@implementer(IHandshakeListener)
class _ConnectProbe(_Probe):
    """
    Passes once connected; to a TLS server, once the TLS handshake is done.
    """

    def __init__(self, tls: bool) -> None:
        super().__init__()
        self._tls = tls

    def connectionMade(self) -> None:
        if not self._tls:
            self.decide("connected")

    def handshakeCompleted(self) -> None:
        self.decide("TLS handshake completed")

    def lost(self, reason: Failure) -> ProbeFailed:
        return ProbeFailed(f"TLS handshake failed: {reason.getErrorMessage()}")


class _HTTPProbe(_Probe):
    """
    Sends one request and judges the response by its status and, if asked,
    by a text in the first L{MAX_BODY} bytes of its body; never reads more.
    """

    def __init__(
        self,
        request: bytes,
        method: bytes,
        expect_status: tuple[int, int],
        text: str | None,
        max_body: int,
    ) -> None:
        super().__init__()
        self._request = request
        self._expect_status = expect_status
        self._shown = text
        self._text = None if text is None else text.encode("utf-8")
        self._max_body = max_body
        self._reader = ResponseReader()
        self._reader.expect(method)
        self._seen = 0
        self._tail = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        if self._verdict is None:
            self._read(self._reader.feed(data))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._verdict is None:
            self._read(self._reader.feed_eof())
        super().connectionLost(reason)

    def lost(self, reason: Failure) -> ProbeFailed:
        return ProbeFailed(f"connection closed before a response: {reason.getErrorMessage()}")

    def _read(self, events: list[ResponseEvent]) -> None:
        for event in events:
            if self._verdict is not None:
                return
            if isinstance(event, BodyChunk):
                self._search(event.data)
            elif isinstance(event, ResponseHead):
                self._judge_head(event)
            elif isinstance(event, EndOfMessage):
                self.decide(ProbeFailed(f"body does not contain {self._shown!r}"))
            elif isinstance(event, BadMessage):
                self.decide(ProbeFailed(f"bad response: {event.reason}"))

    def _judge_head(self, head: ResponseHead) -> None:
        status = head.status
        if 100 <= status < 200 and status != 101:
            return  # RFC 9110 15.2: an interim response; the final one follows.
        low, high = self._expect_status
        if not low <= status <= high:
            self.decide(ProbeFailed(f"status {status} not in {low}-{high}"))
        elif self._text is None:
            self.decide(f"status {status}")

    def _search(self, data: bytes) -> None:
        """
        Look for the text in the body, keeping only its length less one
        byte of what was read, for a match across two pieces.
        """
        text = self._text
        assert text is not None
        data = data[: self._max_body - self._seen]
        self._seen += len(data)
        window = self._tail + data
        if text in window:
            self.decide(f"body contains {self._shown!r}")
        elif self._seen >= self._max_body:
            self.decide(
                ProbeFailed(
                    f"body does not contain {self._shown!r} in its first {self._max_body} bytes"
                )
            )
        else:
            self._tail = window[len(window) - len(text) + 1 :] if len(text) > 1 else b""


class _ProbeFactory(Factory):
    """
    Gives the one connection of a probe its protocol, quietly.
    """

    noisy = False

    def __init__(self, probe: _Probe) -> None:
        self._probe = probe

    def buildProtocol(self, addr: object) -> _Probe:
        return self._probe


def _run(
    reactor: IReactorTCP, clock: IReactorTime, server: ServerState, timeout: float, probe: _Probe
) -> Deferred[str]:
    """
    Connect C{probe} to C{server}, over TLS if it speaks TLS, and wait for
    its verdict and its connection's close, C{timeout} seconds at most.
    """
    connecting = server_endpoint(reactor, server, timeout).connect(_ProbeFactory(probe))

    def connected(_: object) -> Deferred[str]:
        return probe.done

    def failed(reason: Failure) -> str:
        raise ProbeFailed(failure_reason(reason, timeout))

    def timed_out(result: str | Failure, timeout: float) -> str | Failure:
        # A verdict reached before the timeout stands, though the close was late.
        if isinstance(result, Failure) and isinstance(result.value, CancelledError):
            raise ProbeFailed(f"timed out after {timeout:g}s")
        return result

    verdict = connecting.addCallback(connected)
    return verdict.addTimeout(timeout, clock, timed_out).addErrback(failed)


@implementer(IHealthCheck)
@define(eq=False)
class TCPConnectCheck:
    """
    The check of a pool whose health check has no path: a server passes when
    a connection to it opens, and for a TLS server when the handshake
    completes. The connection is closed at once.

    @ivar reactor: connects to servers.
    @ivar clock: times the probes.
    @ivar timeout: the seconds a probe may take.
    """

    reactor: IReactorTCP
    clock: IReactorTime
    timeout: float

    def probe(self, server: ServerState) -> Deferred[str]:
        """
        See L{IHealthCheck.probe}.
        """
        return _run(
            self.reactor, self.clock, server, self.timeout, _ConnectProbe(server.tls is not None)
        )


@implementer(IHealthCheck)
@define(eq=False)
class HTTPCheck:
    """
    The check of a pool whose health check has a path: one HTTP/1.1 request,
    over TLS to a TLS server, whose response must have a status in the
    expected range and, if asked, contain a text in the first C{max_body}
    bytes of its body. The connection is closed once that is known.

    @ivar reactor: connects to servers.
    @ivar clock: times the probes.
    @ivar settings: the health check: method, path, Host, status range,
        text and timeout.
    @ivar max_body: the most body bytes read looking for the text.
    """

    reactor: IReactorTCP
    clock: IReactorTime
    settings: HealthCheck
    max_body: int = MAX_BODY

    def probe(self, server: ServerState) -> Deferred[str]:
        """
        See L{IHealthCheck.probe}.
        """
        settings = self.settings
        assert settings.path is not None
        method = settings.method.encode("ascii")
        # RFC 9112 3.2.1 and RFC 3986 3.3: the origin-form takes pchar, "/"
        # and "?"; any other character is percent-encoded, existing escapes kept.
        target = quote(settings.path, safe="/?:@!$&'()*+,;=%").encode("ascii")
        host = (settings.host or server.address).encode("utf-8")
        request = (
            method + b" " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Connection: close\r\nUser-Agent: txproxy-health\r\n\r\n"
        )
        probe = _HTTPProbe(request, method, settings.expect_status, settings.body, self.max_body)
        return _run(self.reactor, self.clock, server, settings.timeout, probe)


def check_for(settings: HealthCheck, reactor: IReactorTCP, clock: IReactorTime) -> IHealthCheck:
    """
    The probe a pool's health check asks for: L{HTTPCheck} with a path,
    L{TCPConnectCheck} without.
    """
    if settings.path is None:
        return TCPConnectCheck(reactor, clock, settings.timeout)
    return HTTPCheck(reactor, clock, settings)
