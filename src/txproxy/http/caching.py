# -*- test-case-name: tests.test_http_caching -*-
"""
The shared cache on the request path: lookups, answers, collapsed misses, background revalidation.

L{txproxy.http.cache} holds the rules and the store and touches nothing;
this module gives them a clock and clients. A route with a cache has one
L{RouteCache}. For each request it looks the request up and returns what
answers it:

  - a L{CachedExchange} that answers from the store (a hit, or a stale
    response while a background L{Exchange} revalidates it), or that waits
    for another request's fetch of the same key (request collapsing) and
    then answers from the store or goes to a server itself;
  - an L{Exchange} with a L{CacheRequest}, which makes the request
    conditional where it revalidates, stores the response as it streams to
    the client, and answers from the store after a 304 or for a failed
    server (C{stale-if-error});
  - a 504 for C{only-if-cached} with nothing stored.

On a route that also compresses, the request's C{Accept-Encoding} is
replaced by the coding txproxy negotiates for it (or C{identity}) before
anything else sees it: the server, the cache key's C{Vary} values and
compression then agree, so every client that negotiates the same coding
shares one stored variant, encoded once, when it was stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from txproxy import config
from txproxy.http.cache import (
    CachedAnswer,
    CachedResponse,
    CachePolicy,
    CacheStatus,
    CacheStore,
    Lookup,
    Outcome,
    PendingFills,
    ResponseDecision,
    conditional_request_headers,
)
from txproxy.http.compression import ENCODINGS, choose_encoding, encoded_not_modified
from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.http.headers import forward_response_headers, header_value
from txproxy.http.responses import LocalResponse, local_response

if TYPE_CHECKING:
    from txproxy.http.exchange import Exchange, ExchangeClient, ExchangeLike
    from txproxy.http.routing import RoutePlan
    from txproxy.http.upstream import UpstreamProtocol

__all__ = [
    "BackgroundClient",
    "CacheRequest",
    "CachedExchange",
    "Forward",
    "RouteCache",
    "same_cache",
]

Forward = Callable[["ExchangeClient", RequestHead, "CacheRequest"], "Exchange"]
"""
Makes the L{Exchange} that forwards a request of a route to its pool, for a
client, with the cache's part in it: the listener's, holding the route and
the client connection's facts.
"""

_STORED = (Outcome.HIT, Outcome.STALE)
_UPGRADE = CacheStatus(fwd="bypass", detail="upgrade")

# Each content coding's name as sent in Accept-Encoding to servers.
_CODINGS: dict[str | None, bytes] = {coding: coding.encode("ascii") for coding in ENCODINGS}


def same_cache(old: config.Route, new: config.Route) -> bool:
    """
    Whether a route after a reload may keep the store of a route before it:
    both cache with equal settings, and they differ at most in their pool's
    servers and settings, which do not change what is stored under a URL.
    """
    if old.cache is None or new.cache is None or old.pool.name != new.pool.name:
        return False
    return evolve(old, pool=new.pool) == new


class RouteCache:
    """
    The cache of one route: its rules, its store, the fetches under way, and
    the clock they are all read with.

    @ivar settings: the route's C{Cache}.
    @ivar policy: the rules.
    @ivar store: the stored responses.
    @ivar pending: the keys being fetched now, and the requests waiting for each.
    @ivar clock: the time source.
    """

    _log = Logger()

    def __init__(
        self,
        settings: config.Cache,
        compression: config.Compression | None,
        clock: IReactorTime,
    ) -> None:
        """
        @param compression: the route's compression, whose codings the
            stored variants are told apart by; L{None} for none.
        """
        self.settings = settings
        self.policy = CachePolicy.from_config(settings)
        self.store = CacheStore(settings.max_size, settings.max_object_size)
        self.pending: PendingFills[CachedExchange] = PendingFills()
        self.clock = clock
        self._algorithms = None if compression is None else compression.algorithms

    @property
    def compresses(self) -> bool:
        """
        Whether the route compresses responses, so that a stored response may
        be one txproxy encoded.
        """
        return self._algorithms is not None

    def negotiated(self, head: RequestHead) -> RequestHead:
        """
        The request as the cache and the server see it on a route that
        compresses: one C{Accept-Encoding}, the coding negotiated for the
        client or C{identity}.
        """
        algorithms = self._algorithms
        if algorithms is None:
            return head
        others = []
        sent = []
        for each in head.headers:
            if each[0].lower() == b"accept-encoding":
                sent.append(each[1])
            else:
                others.append(each)
        coding = choose_encoding(b", ".join(sent) if sent else None, algorithms)
        value = _CODINGS.get(coding, b"identity")
        if len(sent) == 1 and sent[0] == value:
            return head
        others.append((b"Accept-Encoding", value))
        # Made directly rather than by attrs.evolve: this is on every request's path.
        return RequestHead(
            head.method,
            head.target,
            head.version,
            tuple(others),
            head.content_length,
            head.chunked,
            head.keep_alive,
            head.upgrade,
            head.expect_continue,
            head.host,
        )

    def exchange_for(
        self,
        client: ExchangeClient,
        head: RequestHead,
        scheme: bytes,
        plan: RoutePlan,
        forward: Forward,
    ) -> ExchangeLike | LocalResponse:
        """
        Look a request up and return what answers it; see the module's docstring.

        @param scheme: C{b"http"} or C{b"https"}, as the listener speaks.
        @param plan: the request's route.
        @param forward: makes the exchange that forwards the request.
        """
        if head.upgrade:
            # A switch of protocols is nothing a cache answers or stores.
            bypass = Lookup(Outcome.BYPASS, None, None, None, _UPGRADE, method=head.method)
            return forward(client, head, CacheRequest(self, head, bypass))
        head = self.negotiated(head)
        lookup = self.policy.lookup(self.store, scheme, head, self.clock.seconds())
        outcome = lookup.outcome
        if outcome in _STORED:
            return CachedExchange(self, client, head, lookup, scheme, plan, forward)
        if outcome is Outcome.UNAVAILABLE:
            response = local_response(
                504, header_value(head.headers, b"accept"), close=not head.keep_alive or None
            )
            return evolve(response, headers=(*response.headers, _cache_status(lookup.status)))
        key = lookup.key
        if outcome is Outcome.MISS and key is not None and self.settings.collapse_timeout > 0:
            if not self.pending.lead(key):
                return CachedExchange(self, client, head, lookup, scheme, plan, forward)
            return self.forward(client, head, lookup, forward, leading=True)
        return self.forward(client, head, lookup, forward)

    def refuse(self, head: RequestHead, status: int, scheme: bytes) -> LocalResponse:
        """
        txproxy's own C{status} for a request of the route, such as a 413 for
        a body too large, with the C{Cache-Status} its lookup would have given.
        """
        lookup = self.policy.lookup(self.store, scheme, head, self.clock.seconds())
        response = local_response(
            status, header_value(head.headers, b"accept"), close=not head.keep_alive or None
        )
        return evolve(response, headers=(*response.headers, _cache_status(lookup.status)))

    def forward(
        self,
        client: ExchangeClient,
        head: RequestHead,
        lookup: Lookup,
        forward: Forward,
        leading: bool = False,
    ) -> Exchange:
        """
        Make the exchange that forwards a request the store could not answer.

        A C{HEAD} whose response could be stored goes as a C{GET}, as nginx's
        C{proxy_cache_convert_head} does, so that the response is stored for
        both methods; its client gets the head alone.

        @param leading: whether the request fetches the key for others waiting.
        """
        if head.method == b"HEAD":
            as_get = lookup.as_get()
            if as_get.may_store:
                get = evolve(head, method=b"GET")
                return forward(client, get, CacheRequest(self, get, as_get, leading, head))
        return forward(client, head, CacheRequest(self, head, lookup, leading))

    def answer(self, entry: CachedResponse, head: RequestHead, status: CacheStatus) -> CachedAnswer:
        """
        The response a request gets from a stored one, now.
        """
        return self.policy.answer(entry, head, self.clock.seconds(), status)

    def revalidate(self, lookup: Lookup, head: RequestHead, forward: Forward) -> None:
        """
        Revalidate a stale response in the background, as C{stale-while-revalidate}
        lets the cache while it serves it: a conditional C{GET} whose
        response no client sees, unless a fetch of the key is under way.
        """
        key = lookup.key
        if key is None or not self.pending.lead(key):
            return
        if head.method != b"GET":
            head = evolve(head, method=b"GET")
        client = BackgroundClient(self.clock)
        self._log.debug("revalidating {url} in the background", url=lookup.url)
        exchange = forward(client, head, CacheRequest(self, head, lookup.as_get(), leading=True))
        client.exchange = exchange
        exchange.start()


def _cache_status(status: CacheStatus) -> tuple[bytes, bytes]:
    """
    The C{Cache-Status} field of a status.
    """
    return (b"Cache-Status", status.value())


class CacheRequest:
    """
    The cache's part in one L{Exchange}: the lookup it forwards for, and
    what it makes of the server's response.

    @ivar head: the request forwarded, as the cache sees it (its
        C{Accept-Encoding} negotiated, on a route that compresses).
    @ivar client_head: the request the client sent: C{head}, or the C{HEAD}
        that C{head} is the C{GET} of.
    @ivar head_only: whether the client gets the response's head alone,
        though its body is read (and stored).
    @ivar lookup: what the lookup found.
    """

    def __init__(
        self,
        cache: RouteCache,
        head: RequestHead,
        lookup: Lookup,
        leading: bool = False,
        client_head: RequestHead | None = None,
    ) -> None:
        """
        @param leading: whether this request fetches the key for others
            waiting (L{PendingFills.lead}); it settles the fetch however it ends.
        @param client_head: the client's C{HEAD}, when C{head} is its C{GET}.
        """
        self._cache = cache
        self.head = head
        self.client_head = head if client_head is None else client_head
        self.head_only = self.client_head.method == b"HEAD" and head.method != b"HEAD"
        self.lookup = lookup
        self._leading = leading
        self._request_time = cache.clock.seconds()

    def request_fields(self, fields: Headers) -> Headers:
        """
        The fields to forward: made conditional on the stored response, where
        the request revalidates one.
        """
        entry = self.lookup.entry
        if entry is not None and self.lookup.validating:
            return conditional_request_headers(fields, entry)
        return fields

    def on_response(self, response: ResponseHead) -> ResponseDecision:
        """
        Decide what becomes of the server's final response; see
        L{CachePolicy.on_response}.

        @param response: the server's head, with the edits compression makes
            of it where it compresses, so that it describes the body the
            client gets.
        """
        cache = self._cache
        lookup = self.lookup
        entry = lookup.entry
        if response.status == 304 and cache.compresses and entry is not None:
            response = encoded_not_modified(response, entry.etag)
        now = cache.clock.seconds()
        return cache.policy.on_response(
            cache.store, lookup, self.head, response, self._request_time, now
        )

    def answer(self, entry: CachedResponse, status: CacheStatus) -> CachedAnswer:
        """
        The response the client gets from a stored one.
        """
        return self._cache.answer(entry, self.client_head, status)

    def on_error(self) -> CachedAnswer | None:
        """
        The stored response that answers for a server that failed, as
        C{stale-if-error} allows, or L{None}.
        """
        status = self._cache.policy.on_error(self.lookup, self._cache.clock.seconds())
        entry = self.lookup.entry
        if status is None or entry is None:
            return None
        return self.answer(entry, status)

    def failure_fields(self) -> Headers:
        """
        The fields txproxy's own response (a 502, 503, 504 or 413) gets on a
        route with a cache: C{Cache-Status}.
        """
        return (_cache_status(self.lookup.status),)

    def refetch(self) -> None:
        """
        The request goes again, without the cache's preconditions.
        """
        self.lookup = self.lookup.as_miss()
        self._request_time = self._cache.clock.seconds()

    def settle(self) -> None:
        """
        The fetch is over, whether it stored a response or not: the requests
        waiting for it look again. Only the first call of a leader counts.
        """
        if not self._leading:
            return
        self._leading = False
        key = self.lookup.key
        assert key is not None
        for waiter in self._cache.pending.settle(key):
            waiter.settled()


class CachedExchange:
    """
    Answers a request from the store: at once for a hit (and a stale
    response while it is revalidated), or once another request's fetch of
    the same key ends. A request still missing then, or whose wait times
    out, goes to a server through an L{Exchange} this one hands everything to.

    @ivar head: the request as the cache sees it.
    @ivar pool_name: the name of the route's pool.
    """

    def __init__(
        self,
        cache: RouteCache,
        client: ExchangeClient,
        head: RequestHead,
        lookup: Lookup,
        scheme: bytes,
        plan: RoutePlan,
        forward: Forward,
    ) -> None:
        self._cache = cache
        self._client = client
        self.head = head
        self._lookup = lookup
        self._scheme = scheme
        self._plan = plan
        self._forward = forward
        self.pool_name = plan.pool_name
        self._exchange: Exchange | None = None
        self._timer: IDelayedCall | None = None
        self._request_ended = not head.has_body
        self._done = False

    @property
    def upstream_address(self) -> str:
        """
        C{cache}, or the server that answered when the request went to one.
        """
        if self._exchange is not None:
            return self._exchange.upstream_address
        return "cache"

    @property
    def request_ended(self) -> bool:
        """
        Whether the whole request has been read from the client.
        """
        if self._exchange is not None:
            return self._exchange.request_ended
        return self._request_ended

    def start(self) -> None:
        """
        Answer from the store, or wait for the fetch under way.
        """
        lookup = self._lookup
        if lookup.outcome in _STORED:
            self._answer(lookup)
            return
        key = lookup.key
        assert key is not None
        self._cache.pending.wait(key, self)
        self._timer = self._cache.clock.callLater(
            self._cache.settings.collapse_timeout, self._waited
        )

    def _answer(self, lookup: Lookup) -> None:
        """
        Send the stored response that C{lookup} found, whole; revalidate it
        in the background if it is stale.
        """
        entry = lookup.entry
        assert entry is not None
        self._done = True
        answer = self._cache.answer(entry, self.head, lookup.status)
        head = answer.head
        plan = self._plan
        client = self._client
        client.start_response(
            head, forward_response_headers(head, plan.response_edits, plan.keep_server_headers)
        )
        if answer.body:
            client.send_body(answer.body)
        client.end_response()
        if lookup.outcome is Outcome.STALE:
            self._cache.revalidate(lookup, self.head, self._forward)

    def settled(self) -> None:
        """
        The fetch waited for is over: look again.
        """
        self._cancel_timer()
        self._again()

    def _waited(self) -> None:
        """
        The fetch took longer than C{collapse_timeout}: stop waiting.
        """
        self._timer = None
        key = self._lookup.key
        assert key is not None
        self._cache.pending.leave(key, self)
        self._again()

    def _again(self) -> None:
        """
        Look the request up again after waiting: answer from the store, or
        go to a server, without waiting again.
        """
        if self._done:
            return
        cache = self._cache
        lookup = cache.policy.lookup(
            cache.store, self._scheme, self.head, cache.clock.seconds(), collapsed=True
        )
        if lookup.outcome in _STORED:
            self._answer(lookup)
            return
        exchange = cache.forward(self._client, self.head, lookup, self._forward)
        self._exchange = exchange
        exchange.start()

    def request_body(self, data: bytes) -> None:
        """
        Pass request body on to the exchange, if any: requests with a body
        bypass the cache, so none comes while waiting.
        """
        if self._exchange is not None:
            self._exchange.request_body(data)

    def request_end(self) -> None:
        """
        The client has sent the whole request.
        """
        self._request_ended = True
        if self._exchange is not None:
            self._exchange.request_end()

    def client_lost(self) -> None:
        """
        The client left: stop waiting, or abandon the exchange.
        """
        if self._exchange is not None:
            self._exchange.client_lost()
            return
        if not self._done:
            self._done = True
            self._cancel_timer()
            key = self._lookup.key
            if key is not None:
                self._cache.pending.leave(key, self)

    def timed_out(self) -> None:
        """
        The server was too slow: the exchange, if any, gives up.
        """
        if self._exchange is not None:
            self._exchange.timed_out()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@implementer(IPushProducer)
class BackgroundClient:
    """
    The client of a background revalidation: it takes the response and drops
    it, as what matters is what the cache stored of it, and times the server
    out as a client connection would.

    @ivar exchange: the exchange it is the client of.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._timer: IDelayedCall | None = None
        self.exchange: Exchange | None = None

    @property
    def producer(self) -> IPushProducer:
        """
        Itself: there is no request body to pause.
        """
        return self

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def send_interim(self, response: ResponseHead, headers: Headers) -> None:
        pass

    def start_response(self, response: ResponseHead, headers: Headers) -> None:
        pass

    def send_body(self, data: bytes) -> None:
        pass

    def end_response(self) -> None:
        self._over()

    def fail(self, status: int, headers: Headers = ()) -> None:
        self._log.debug("background revalidation failed with {status}", status=status)
        self._over()

    def abort(self) -> None:
        self._over()

    def tunnel(self, upstream: UpstreamProtocol, data: bytes) -> None:
        upstream.transport.loseConnection()
        self._over()

    def register_response_producer(self, producer: IPushProducer | None) -> None:
        pass

    def wait_for_upstream(self, timeout: float) -> None:
        """
        Time the server out C{timeout} seconds from now.
        """
        if self._timer is not None and self._timer.active():
            self._timer.reset(timeout)
        else:
            self._timer = self._clock.callLater(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if self.exchange is not None:
            self.exchange.timed_out()

    def _over(self) -> None:
        """
        The revalidation ended: no timer is left behind.
        """
        self.exchange = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
