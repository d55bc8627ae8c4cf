# -*- test-case-name: tests.test_http_channel -*-
"""
An HTTP listener's factory: its routes, limits and pools, shared by its client connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING

from attrs import evolve
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from txproxy import config
from txproxy.connections import Connections
from txproxy.http.accesslog import AccessLog
from txproxy.http.cacheregistry import CacheRegistry
from txproxy.http.channel import ClientChannel
from txproxy.http.events import Headers, RequestHead
from txproxy.http.exchange import Exchange, ExchangeClient, ExchangeLike, ExchangeSettings
from txproxy.http.headers import HeaderEdits
from txproxy.http.parsing import RequestReader
from txproxy.http.paths import PathEscapesRoot, normalize_target
from txproxy.http.responses import LocalResponse, redirect
from txproxy.http.routing import RoutePlan, Router, host_name
from txproxy.http.upstream import IdleUpstreams
from txproxy.interfaces import PickContext
from txproxy.pool import Pool
from txproxy.tls import client_certificate_facts

if TYPE_CHECKING:
    from txproxy.http.caching import CacheRequest, RouteCache
    from txproxy.http.h2 import H2Channel

CLIENT_CERTIFICATE_HEADERS = (b"x-client-cert-subject", b"x-client-cert-fingerprint")
"""
The fields that tell servers of a client's verified certificate: its subject
(RFC 4514) and its SHA-256 fingerprint.
"""


def _listener_edits(tls: config.TLS | None) -> tuple[HeaderEdits, HeaderEdits]:
    """
    The header edits of a listener, under those of its routes: on TLS, no
    client may send the client certificate fields, and HSTS is announced
    where configured.
    """
    if tls is None:
        return HeaderEdits(), HeaderEdits()
    response = HeaderEdits()
    if tls.hsts is not None:
        response = HeaderEdits(set=((b"Strict-Transport-Security", b"max-age=%d" % (tls.hsts,)),))
    return HeaderEdits(remove=frozenset(CLIENT_CERTIFICATE_HEADERS)), response


class HTTPFactory(Factory[ClientChannel]):
    """
    Makes a L{ClientChannel} per client of one HTTP listener, and decides,
    for each request, which route and pool take it.

    A reload gives it the listener's new settings with L{configure}: open
    connections keep going, and their next requests follow the new routes.

    @ivar limits: the listener's limits, every field set.
    @ivar caches: where the listener's route caches are registered for purges.
    @ivar channels: the client connections now open.
    @ivar accepting: L{False} once the listener is shutting down: responses
        then close their connections.
    """

    protocol = ClientChannel
    noisy = False

    def __init__(
        self,
        listener: config.HTTPListener,
        pools: Mapping[str, Pool],
        idle: Mapping[str, IdleUpstreams],
        clock: IReactorTime,
        access_log: AccessLog | None,
        caches: CacheRegistry | None = None,
    ) -> None:
        """
        @param pools: the runtime pools by name, and C{idle} their idle
            upstream connections: the service's own mappings, which a reload
            changes in place.
        @param access_log: where requests are logged, or L{None}.
        @param caches: where to register the caches of routes, shared by
            the service's listeners; L{None} for one of its own.
        """
        self.clock = clock
        self.pools = pools
        self.idle = idle
        self.access_log = access_log
        self.caches = CacheRegistry() if caches is None else caches
        self._route_caches: dict[int, RouteCache] = {}
        self._cached_routes: list[tuple[config.Route, RouteCache]] = []
        self.channels: Connections[ClientChannel | H2Channel] = Connections()
        self.accepting = True
        self.configure(listener)

    def configure(self, listener: config.HTTPListener) -> None:
        """
        Take a listener's settings, as at start and on each reload: its
        routes (with the pools' C{retries}), limits, redirect, h2c and client
        certificate fields.

        A route with a cache keeps the store it had before a reload when its
        C{Cache} and everything else about it but its pool's servers and
        settings are unchanged (L{same_cache}); otherwise it starts empty.

        Requests from now on, on open connections too, are routed by them;
        exchanges in flight keep what they started with. The listener's TLS
        and access log are not the factory's: the service gives those.
        Every pool the routes name must be in C{pools} and C{idle}.
        """
        tls = listener.tls
        scheme = b"https" if tls is not None else b"http"
        limits = listener.limits.over(config.HTTP_LIMITS)
        # Made before anything changes, so that a missing pool changes nothing.
        settings = {
            id(route): self._settings_for(route, self.idle[route.pool.name], scheme, limits)
            for route in listener.routes
        }
        caches: list[tuple[config.Route, RouteCache]] = []
        for route in listener.routes:
            if route.cache is None:
                continue
            # Loaded only where a route caches.
            from txproxy.http.caching import RouteCache, same_cache

            kept = next(
                (cache for old, cache in self._cached_routes if same_cache(old, route)), None
            )
            caches.append((route, kept or RouteCache(route.cache, route.compression, self.clock)))
        self._cached_routes = caches
        self._route_caches = {id(route): cache for route, cache in caches}
        self.caches.register(self, (cache.store for _, cache in caches))
        self.router = Router(listener.routes, *_listener_edits(tls))
        self.client_certificates = (
            tls is not None and tls.verify_client != "none" and tls.client_certificate_headers
        )
        self.redirect_port = listener.http_to_https
        self.h2c = listener.h2c
        self.limits = limits
        self._settings = settings

    @staticmethod
    def _settings_for(
        route: config.Route, idle: IdleUpstreams, scheme: bytes, listener_limits: config.Limits
    ) -> ExchangeSettings:
        limits = route.limits.over(listener_limits) if route.limits is not None else listener_limits
        assert limits.upstream_connect_timeout is not None
        assert limits.upstream_response_timeout is not None
        return ExchangeSettings(
            idle=idle,
            connect_timeout=limits.upstream_connect_timeout,
            response_timeout=limits.upstream_response_timeout,
            scheme=scheme,
            max_body=limits.max_body or 0,
            retries=route.pool.retries,
        )

    def connection_headers(self, transport: object) -> Headers:
        """
        The fields added to every request forwarded from one client
        connection: those that tell servers of the certificate the client
        verified with, where the listener asks for one.
        """
        if not self.client_certificates:
            return ()
        get_certificate = getattr(transport, "getPeerCertificate", None)
        certificate = get_certificate() if get_certificate is not None else None
        if certificate is None:
            return ()
        subject, fingerprint = client_certificate_facts(certificate.to_cryptography())
        return (
            (b"X-Client-Cert-Subject", subject.encode("utf-8")),
            (b"X-Client-Cert-Fingerprint", fingerprint.encode("ascii")),
        )

    def new_reader(self) -> RequestReader:
        """
        A request reader held to this listener's header limits.
        """
        assert self.limits.max_header_size is not None and self.limits.max_headers is not None
        return RequestReader(
            max_header_size=self.limits.max_header_size, max_headers=self.limits.max_headers
        )

    def exchange_for(
        self,
        client: ExchangeClient,
        head: RequestHead,
        context: PickContext,
        client_ip: str,
        connection_headers: Headers = (),
    ) -> ExchangeLike | LocalResponse | int:
        """
        Route a request: the exchange that will forward it or answer it from
        the route's cache, or the response or status txproxy answers it with
        itself.

        C{client} is what answers the request: an HTTP/1.1 connection, or
        one stream of an HTTP/2 connection; C{context}, C{client_ip} and
        C{connection_headers} (fields added to every request forwarded, such
        as a client certificate's) are those of its connection.

        The path is normalised first, so that the route matched is the one of
        the path the server will see, and that path is what is forwarded.
        """
        try:
            target = normalize_target(head.target)
        except PathEscapesRoot:
            return 400
        if target is not head.target:
            head = evolve(head, target=target)
        if self.redirect_port is not None:
            return self._redirect(head)
        plan = self.router.match(head)
        if plan is None:
            return 404
        settings = self._settings[id(plan.route)]
        route_cache = self._route_caches.get(id(plan.route))
        if settings.max_body and (head.content_length or 0) > settings.max_body:
            return 413 if route_cache is None else route_cache.refuse(head, 413, settings.scheme)
        if route_cache is not None:
            forward = partial(self._forward, plan, settings, context, client_ip, connection_headers)
            return route_cache.exchange_for(client, head, settings.scheme, plan, forward)
        return self._forward(plan, settings, context, client_ip, connection_headers, client, head)

    def _forward(
        self,
        plan: RoutePlan,
        settings: ExchangeSettings,
        context: PickContext,
        client_ip: str,
        connection_headers: Headers,
        client: ExchangeClient,
        head: RequestHead,
        cache: CacheRequest | None = None,
    ) -> Exchange:
        """
        The exchange that forwards a request to the route's pool, with what
        the route's cache, if any, asks of it.
        """
        return Exchange(
            client,
            head,
            plan,
            self.pools[plan.pool_name],
            settings,
            context,
            client_ip,
            connection_headers,
            cache,
        )

    def _redirect(self, head: RequestHead) -> LocalResponse | int:
        """
        Send the client to the same host and target over HTTPS.
        """
        if head.host is None or not head.target.startswith(b"/"):
            return 400
        host = host_name(head.host)
        port = self.redirect_port
        if port is not None and port != 443:
            host += b":%d" % (port,)
        return redirect(b"https://" + host + head.target, head.method, close=head.has_body)

    def channel_ended(self, channel: ClientChannel | H2Channel) -> None:
        """
        Forget a client connection that closed.
        """
        self.channels.discard(channel)

    def close_connections(self) -> Deferred[None]:
        """
        Close every client connection gracefully, as a stopping listener
        does: an idle one at once, one with a request in flight once its
        response is written (HTTP/2: GOAWAY, then once its open streams are
        answered). Tunnels after a protocol switch go on until either side
        closes them, or L{abort_connections}.

        @return: a L{Deferred} that fires once every client connection is gone.
        """
        self.accepting = False
        emptied = self.channels.emptied()
        for channel in list(self.channels):
            channel.go_away()
        return emptied

    def abort_connections(self) -> None:
        """
        Cut every client connection at once: a stopping listener's drain time is over.
        """
        self.accepting = False
        for channel in list(self.channels):
            channel.transport.abortConnection()
