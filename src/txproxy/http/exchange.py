# -*- test-case-name: tests.test_http_channel -*-
"""
One request and its response through one pool: pick a server, send, stream back, retry where safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

from attrs import evolve, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure

from txproxy.http.compression import Encoder, decide
from txproxy.http.events import (
    BadMessage,
    BodyChunk,
    EndOfMessage,
    Headers,
    RequestHead,
    ResponseEvent,
    ResponseHead,
)
from txproxy.http.headers import forward_request_headers, forward_response_headers
from txproxy.http.routing import RoutePlan
from txproxy.http.upstream import IdleUpstreams, UpstreamProtocol
from txproxy.http.writing import LAST_CHUNK, chunk, request_head
from txproxy.interfaces import PickContext
from txproxy.pool import Lease, Pool, Unavailable

if TYPE_CHECKING:
    from txproxy.http.cache import CachedAnswer, ResponseFill
    from txproxy.http.caching import CacheRequest

# RFC 9110 section 9.2.2.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class ExchangeClient(TypingProtocol):
    """
    What the client connection offers the exchange that answers it.
    """

    @property
    def producer(self) -> IPushProducer:
        """
        Reads from the client: paused while the server's buffer is full.
        """

    def send_interim(self, response: ResponseHead, headers: Headers) -> None:
        """
        Pass an interim (1xx) response on, where the client's protocol has them.
        """

    def start_response(self, response: ResponseHead, headers: Headers) -> None:
        """
        Send the final response's head.
        """

    def send_body(self, data: bytes) -> None:
        """
        Send some of the response body.
        """

    def end_response(self) -> None:
        """
        The response is complete.
        """

    def fail(self, status: int, headers: Headers = ()) -> None:
        """
        No response was sent: answer with txproxy's own C{status}, with
        C{headers} (such as C{Cache-Status}) added to its fields.
        """

    def abort(self) -> None:
        """
        The response broke off after it started: close the client connection.
        """

    def tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        """
        The server switched protocols: relay raw bytes both ways from now on.
        """

    def register_response_producer(self, producer: IPushProducer | None) -> None:
        """
        Let the client connection pause C{producer} while its buffer is full.
        """

    def wait_for_upstream(self, timeout: float) -> None:
        """
        Call the exchange's C{timed_out} if the server stays silent for
        C{timeout} seconds from now.
        """


class ExchangeLike(TypingProtocol):
    """
    What a client connection needs of what answers its request: an
    L{Exchange}, or an answer from the cache
    (L{txproxy.http.caching.CachedExchange}).
    """

    @property
    def upstream_address(self) -> str:
        """
        The server that answered, C{-} for none, or C{cache}, for the access log.
        """

    @property
    def pool_name(self) -> str:
        """
        The name of the pool of the request's route, for the access log.
        """

    @property
    def request_ended(self) -> bool:
        """
        Whether the whole request has been read from the client.
        """

    def start(self) -> None:
        """
        Begin answering: the client's methods may be called from here on, even before it returns.
        """

    def request_body(self, data: bytes) -> None:
        """
        Some of the request body, from the client.
        """

    def request_end(self) -> None:
        """
        The client has sent the whole request.
        """

    def client_lost(self) -> None:
        """
        The client left: stop.
        """

    def timed_out(self) -> None:
        """
        The deadline set by C{ExchangeClient.wait_for_upstream} passed.
        """


@frozen
class ExchangeSettings:
    """
    What an exchange needs to know of its listener.

    @ivar idle: the idle upstream connections shared by the listeners.
    @ivar connect_timeout: seconds to wait for a server to accept.
    @ivar response_timeout: seconds to wait for the server between reads.
    @ivar scheme: C{b"http"} or C{b"https"}, for X-Forwarded-Proto.
    @ivar max_body: the largest request body forwarded, 0 for no limit.
    @ivar retries: how many other servers to try after a failure.
    """

    idle: IdleUpstreams
    connect_timeout: float
    response_timeout: float
    scheme: bytes
    max_body: int
    retries: int


class Exchange:
    """
    Carries one request to a server of a pool and its response back.

    The request head is forwarded once a server is connected; body bytes that
    arrive before that wait here while the client is paused. A request is tried
    again on another server (or on a fresh connection, when a kept-alive one
    had closed) only while nothing of the response has arrived, and only when
    no byte reached a server or the request is idempotent and has no body.

    On a route with a cache, a L{CacheRequest} takes part: it may make the
    request conditional, decides what becomes of the response (forwarded
    and perhaps stored as it streams, or replaced by a stored one), and may
    answer for a server that failed (C{stale-if-error}).

    @ivar upstream_address: the server that answered, C{-}, or C{cache}
        when a stored response answered for a server that failed.
    @ivar pool_name: the name of the pool the request went to.
    """

    _log = Logger()

    def __init__(
        self,
        client: ExchangeClient,
        head: RequestHead,
        plan: RoutePlan,
        pool: Pool,
        settings: ExchangeSettings,
        context: PickContext,
        client_ip: str,
        connection_headers: Headers = (),
        cache: CacheRequest | None = None,
    ) -> None:
        """
        @param cache: the cache's part in the exchange, on a route with a cache.
        """
        self._client = client
        self.head = head
        self._plan = plan
        self._pool = pool
        self.pool_name = pool.name
        self._settings = settings
        self._context = context
        self._tries_left = settings.retries + 1
        self._body_bytes = 0
        self._target = plan.forward_target(head.target)
        self._cache = cache
        # The client asked HEAD of a GET sent for the cache: it gets no body.
        self._head_only = cache is not None and cache.head_only
        self._forward_fields = (
            forward_request_headers(head, plan.request_edits, client_ip, settings.scheme)
            + connection_headers
        )
        self._fields = self._forward_fields
        if cache is not None:
            self._fields = cache.request_fields(self._fields)
        # An HTTP/1.0 request without Host goes on as HTTP/1.1, which needs
        # one: it gets the server's address, as nginx's $proxy_host, once known.
        self._request_bytes = (
            b""
            if head.host is None
            else request_head(head.method, self._target, self._fields, head.chunked)
        )
        self._pending: list[bytes] = []
        self._request_ended = not head.has_body
        self._tried: frozenset[str] = frozenset()
        self._exhausted_status = 502
        self._lease: Lease | None = None
        self._upstream: UpstreamProtocol | None = None
        self._connecting: Deferred[UpstreamProtocol] | None = None
        self._waiting: Deferred[Lease] | None = None
        self._sent = False
        self._response: ResponseHead | None = None
        # Compresses the response body, where the route and the client ask.
        self._encoder: Encoder | None = None
        # Collects the body the client gets, where the cache stores it.
        self._fill: ResponseFill | None = None
        # A stored response answered instead: the server's body is dropped.
        self._serving = False
        # A 304 validated another response than the stored one: ask again.
        self._refetching = False
        self._done = False
        self.upstream_address = "-"

    @property
    def request_ended(self) -> bool:
        """
        Whether the whole request has been read from the client.
        """
        return self._request_ended

    def start(self) -> None:
        """
        Find a server and send it the request.
        """
        self._attempt(fresh=False)

    def _attempt(self, fresh: bool) -> None:
        self._tries_left -= 1
        context = self._context
        if self._tried:
            context = evolve(context, exclude=self._tried)
        lease = self._pool.lease(context)
        if lease is not None:
            self._leased(lease, fresh)
        elif self._tried or not self._pool.queue_size:
            self._fail(self._exhausted_status if self._tried else 503)
        else:
            # Every server is at its max_connections: wait in the pool's queue.
            self._waiting = self._pool.wait(context)
            self._waiting.addCallbacks(self._leased, self._wait_failed, callbackArgs=(fresh,))

    def _wait_failed(self, reason: Failure) -> None:
        self._waiting = None
        if reason.check(Unavailable):  # type: ignore[no-untyped-call]
            self._fail(503)
        else:
            reason.trap(CancelledError)  # type: ignore[no-untyped-call]

    def _leased(self, lease: Lease, fresh: bool) -> None:
        self._waiting = None
        self._lease = lease
        self._tried |= {lease.server.address}
        self.upstream_address = lease.server.address
        upstream = None if fresh else self._settings.idle.take(lease.server)
        if upstream is not None:
            self._use(upstream)
            return
        self._connecting = self._settings.idle.connect(lease.server, self._settings.connect_timeout)
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, upstream: UpstreamProtocol) -> None:
        self._connecting = None
        self._use(upstream)

    def _connect_failed(self, reason: Failure) -> None:
        self._connecting = None
        lease, self._lease = self._lease, None
        assert lease is not None
        if self._done:
            lease.release()
            return
        lease.release(failed=True)
        self._log.warn(
            "connect to server {server} of pool {pool} failed: {reason}",
            server=lease.server.address,
            pool=self._pool.name,
            reason=reason.getErrorMessage(),
        )
        # The client gets the status of the last failure, however the tries end.
        self._exhausted_status = 504 if reason.check(ConnectTimeout) else 502  # type: ignore[no-untyped-call]
        if self._tries_left > 0:
            self._attempt(fresh=False)
        else:
            self._fail(self._exhausted_status)

    def _use(self, upstream: UpstreamProtocol) -> None:
        self._upstream = upstream
        upstream.use(self, self.head.method)
        # The wait for a server is over: read the client again, unless the
        # writes below fill the upstream buffer, which pauses it anew.
        self._client.producer.resumeProducing()
        transport = upstream.transport
        transport.registerProducer(self._client.producer, True)
        self._client.register_response_producer(transport)
        if self._request_bytes:
            transport.write(self._request_bytes)
        else:
            host = ((b"Host", upstream.server.address.encode("ascii")),)
            transport.write(
                request_head(self.head.method, self._target, host + self._fields, self.head.chunked)
            )
        if self._pending:
            transport.writeSequence(self._pending)
            self._pending = []
        self._sent = True
        self._touch()

    def request_body(self, data: bytes) -> None:
        """
        Forward some of the request body, or hold it until a server is connected.

        A body over C{max_body} ends the exchange with 413, unread.
        """
        self._body_bytes += len(data)
        if self._settings.max_body and self._body_bytes > self._settings.max_body:
            self._give_up(413, failed=False)
            return
        if self.head.chunked:
            data = chunk(data)
        if self._upstream is not None:
            self._upstream.transport.write(data)
            self._touch()
        else:
            self._pending.append(data)
            self._client.producer.pauseProducing()

    def request_end(self) -> None:
        """
        The client has sent the whole request.
        """
        self._request_ended = True
        if self.head.chunked:
            if self._upstream is not None:
                self._upstream.transport.write(LAST_CHUNK)
            else:
                self._pending.append(LAST_CHUNK)

    def response_events(self, events: list[ResponseEvent]) -> None:
        """
        Pass what the server sent on to the client.
        """
        if not events or type(events[-1]) is not EndOfMessage:
            # More is to come: the server has response_timeout to send it.
            self._touch()
        client = self._client
        for event in events:
            if self._done:
                return
            if isinstance(event, BodyChunk):
                if self._serving:
                    continue
                data = event.data
                if self._encoder is not None:
                    # An empty chunk would end a chunked body early.
                    data = self._encoder.compress(data)
                    if not data:
                        continue
                if not self._head_only:
                    client.send_body(data)
                if self._fill is not None:
                    self._fill.feed(data)
            elif isinstance(event, ResponseHead):
                self._response_head(event)
            elif isinstance(event, EndOfMessage):
                if self._refetching:
                    self._refetch()
                    return
                if self._encoder is not None:
                    tail = self._encoder.finish()
                    if tail:
                        if not self._head_only:
                            client.send_body(tail)
                        if self._fill is not None:
                            self._fill.feed(tail)
                if self._fill is not None:
                    fill, self._fill = self._fill, None
                    fill.finish()
                self._response_end()
            elif isinstance(event, BadMessage):
                self._log.warn(
                    "server {server} of pool {pool} sent a bad response: {reason}",
                    server=self.upstream_address,
                    pool=self._pool.name,
                    reason=event.reason,
                )
                self._give_up(502, failed=True)

    def _response_head(self, response: ResponseHead) -> None:
        if response.status == 101 and not (self.head.upgrade and self._request_ended):
            # RFC 9110 15.2.2: a switch nobody asked for (or before the
            # request's body was all sent) leaves no protocol to relay.
            self._log.warn(
                "server {server} of pool {pool} switched protocols unasked",
                server=self.upstream_address,
                pool=self._pool.name,
            )
            self._give_up(502, failed=True)
            return
        headers = forward_response_headers(
            response, self._plan.response_edits, self._plan.keep_server_headers
        )
        if 100 <= response.status < 200 and response.status != 101:
            self._client.send_interim(response, headers)
            return
        compression = self._plan.route.compression
        plan = None if compression is None else decide(compression, self.head, response, headers)
        cache = self._cache
        cache_status = None
        if cache is not None:
            # Loaded only where a route caches, and so already here.
            from txproxy.http.cache import Action, with_cache_status

            # The cache judges and stores the server's response as the
            # client gets its body: encoded, where it is compressed.
            decision = cache.on_response(response if plan is None else plan.applied_to(response))
            if decision.action is not Action.FORWARD:
                self._response = response
                if decision.action is Action.REFETCH:
                    self._refetching = True
                else:
                    assert decision.entry is not None
                    self._serve(cache.answer(decision.entry, decision.status), response)
                return
            cache_status = decision.status
            self._fill = decision.fill
            if self._fill is None:
                # Nothing will be stored: requests waiting for it need not wait.
                cache.settle()
        if plan is not None:
            response, headers = plan.response, plan.headers
            self._encoder = plan.encoder()
        if cache_status is not None:
            headers = with_cache_status(headers, cache_status)
        self._response = response
        self._client.start_response(response, headers)

    def _serve(self, answer: CachedAnswer, response: ResponseHead) -> None:
        """
        Answer with a stored response rather than the server's: one a 304
        freshened, or a stale one in place of a server error.

        A 304 has no body, and its connection goes back to the idle ones at
        its end; another response's body is not worth reading, and its
        connection is closed.
        """
        self._send_answer(answer)
        if response.status == 304:
            self._serving = True
            return
        upstream, lease = self._upstream, self._lease
        assert upstream is not None and lease is not None
        self._finish()
        lease.release(status=response.status)
        upstream.sink = None
        upstream.transport.loseConnection()
        self._client.end_response()

    def _send_answer(self, answer: CachedAnswer) -> None:
        """
        Send a response made from the cache, all but its end.
        """
        head = answer.head
        headers = forward_response_headers(
            head, self._plan.response_edits, self._plan.keep_server_headers
        )
        self._client.start_response(head, headers)
        if answer.body:
            self._client.send_body(answer.body)

    def _refetch(self) -> None:
        """
        Send the request again without the cache's preconditions, after a
        304 that validated another response than the one stored: the
        connection goes back to the idle ones and the tries start over.
        """
        upstream, lease, response = self._upstream, self._lease, self._response
        cache = self._cache
        assert upstream is not None and lease is not None and response is not None
        assert cache is not None
        self._detach()
        self._lease = None
        lease.release(status=response.status)
        if response.keep_alive:
            self._settings.idle.put(upstream)
        else:
            upstream.sink = None
            upstream.transport.loseConnection()
        cache.refetch()
        self._refetching = False
        self._response = None
        self._sent = False
        self._fields = self._forward_fields
        if self.head.host is not None:
            self._request_bytes = request_head(
                self.head.method, self._target, self._fields, self.head.chunked
            )
        self._tried = frozenset()
        self._tries_left = self._settings.retries + 1
        self._exhausted_status = 502
        self._attempt(fresh=False)

    def _response_end(self) -> None:
        upstream, response = self._upstream, self._response
        assert upstream is not None and response is not None
        self._finish()
        assert self._lease is not None
        self._lease.release(status=response.status)
        if response.status == 101:
            self._client.tunnel(upstream, upstream.reader.detach())
            return
        if response.keep_alive and self._request_ended:
            self._settings.idle.put(upstream)
        else:
            upstream.sink = None
            upstream.transport.loseConnection()
        self._client.end_response()

    def upstream_lost(self, upstream: UpstreamProtocol, reason: Failure) -> None:
        """
        The server's connection closed before the response was complete.
        """
        if self._done:
            return
        reused = upstream.requests > 1
        if self._response is None and not upstream.received and self._may_retry():
            self._detach()
            lease, self._lease = self._lease, None
            assert lease is not None
            lease.release(failed=not reused)
            if reused:
                # A kept-alive connection the server had just closed: try a fresh one.
                self._tried -= {lease.server.address}
            self._exhausted_status = 502
            self._attempt(fresh=reused)
            return
        self._give_up(502, failed=not reused or upstream.received)

    def _may_retry(self) -> bool:
        if self._tries_left <= 0:
            return False
        return not self._sent or (self.head.method in IDEMPOTENT and not self.head.has_body)

    def _give_up(self, status: int | None, failed: bool) -> None:
        """
        End the exchange without a complete response.

        The upstream connection is dropped and the server released; the client
        gets C{status} if nothing of the response was sent, or is cut off if it
        was. With C{status} L{None} the client is gone and gets nothing.

        @param failed: whether the server is to blame.
        """
        if self._done:
            return
        upstream = self._upstream
        self._finish()
        if upstream is not None:
            upstream.sink = None
            upstream.transport.abortConnection()
        if self._lease is not None:
            self._lease.release(failed=failed)
        if status is None:
            return
        if self._response is None:
            self._answer_failure(status)
        else:
            self._client.abort()

    def _fail(self, status: int) -> None:
        self._finish()
        self._answer_failure(status)

    def _answer_failure(self, status: int) -> None:
        """
        Answer with txproxy's own C{status}, or, where the cache has a
        response C{stale-if-error} lets it serve for a failed server, with that.
        """
        cache = self._cache
        if cache is None:
            self._client.fail(status)
            return
        if status in (502, 503, 504):
            answer = cache.on_error()
            if answer is not None:
                self.upstream_address = "cache"
                self._send_answer(answer)
                self._client.end_response()
                return
        self._client.fail(status, cache.failure_fields())

    def _touch(self) -> None:
        """
        Push the response deadline back: the server just sent or was sent something.
        """
        self._client.wait_for_upstream(self._settings.response_timeout)

    def timed_out(self) -> None:
        """
        The server was silent for C{response_timeout} seconds: 504, or cut
        the client off if the response had started.
        """
        if self._done:
            return
        self._log.warn(
            "server {server} of pool {pool} did not answer within {timeout}s",
            server=self.upstream_address,
            pool=self._pool.name,
            timeout=self._settings.response_timeout,
        )
        self._give_up(504, failed=True)

    def _detach(self) -> None:
        """
        Unlink the producers of the current upstream connection.
        """
        upstream, self._upstream = self._upstream, None
        if upstream is None:
            return
        upstream.transport.unregisterProducer()
        upstream.transport.resumeProducing()
        self._client.register_response_producer(None)
        self._client.producer.resumeProducing()

    def _finish(self) -> None:
        """
        Unlink the upstream connection; nothing more happens.
        """
        self._done = True
        if self._cache is not None:
            if self._fill is not None:
                fill, self._fill = self._fill, None
                fill.abandon()
            self._cache.settle()
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._detach()

    def client_lost(self) -> None:
        """
        The client left: abandon the exchange and drop its upstream connection.
        """
        self._give_up(None, failed=False)
