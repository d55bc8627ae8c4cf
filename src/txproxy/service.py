# -*- test-case-name: tests.test_service -*-
"""
Wire a configuration into one service tree: pools, listeners and the services beside them.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from txproxy import config
from txproxy.admin import AdminAPI, AdminSite
from txproxy.balancing import balancer_for
from txproxy.clienthello import SNIRoutes
from txproxy.health import HealthService
from txproxy.http.accesslog import AccessLog
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.interfaces import IProxyReactor
from txproxy.pool import Pool, ServerState
from txproxy.tcp import RelayFactory, RelayTarget
from txproxy.tls import ALPN_HTTP, ServerTLS, upstream_tls


class UnsupportedListener(Exception):
    """
    The configuration asks for a listener this version of txproxy cannot run yet.
    """

    def __init__(self, listener: object) -> None:
        super().__init__(f"{type(listener).__name__} is not supported yet: {listener!r}")
        self.listener = listener


ListenerFactory = RelayFactory | HTTPFactory | AdminSite
"""
The factories a listener may serve with: each can close its connections.
"""


class ListenerService(Service):
    """
    Listens on one endpoint while running, and says where.

    @ivar port: the listening port while running, else L{None}.
    @ivar description: the endpoint string from the configuration.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        description: str,
        factory: ListenerFactory,
        summary: str,
        tls: ServerTLS | None = None,
    ) -> None:
        """
        @param tls: the TLS the listener terminates, or L{None}.
        """
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.summary = summary
        self.tls = tls
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # Bind while still privileged (ports below 1024), as twistd expects;
        # a bind failure propagates and stops start-up before anything serves.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        endpoint = serverFromString(self.reactor, self.description)  # type: ignore[no-untyped-call]
        factory: IProtocolFactory = self.factory
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        failures: list[Failure] = []
        endpoint.listen(factory).addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        self._log.info(
            "listener {endpoint} ready on {host}:{port}: {summary}",
            endpoint=self.description,
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
            summary=self.summary,
        )
        if isinstance(self.factory, HTTPFactory):
            self._log.info(
                "try: curl {insecure}{scheme}://{host}:{port}/",
                insecure="-k " if self.tls is not None else "",
                scheme="https" if self.tls is not None else "http",
                host=getattr(address, "host", address),
                port=getattr(address, "port", ""),
            )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[object]:
        """
        Stop listening, then close the connections that are still open.
        """
        super().stopService()  # type: ignore[no-untyped-call]
        port, self.port = self.port, None
        stopped = maybeDeferred(port.stopListening) if port is not None else succeed(None)
        return stopped.addCallback(lambda _: self.factory.close_connections())


def build_server(server: config.Server) -> ServerState:
    """
    The runtime state of a configured server, up.

    @raise CertificateError: when a file of its upstream TLS cannot be used.
    """
    state = ServerState(
        server.address,
        weight=server.weight,
        backup=server.backup,
        max_connections=server.max_connections,
    )
    if server.tls is not None:
        state.tls = upstream_tls(server.tls, state.host)
    return state


def build_pool(pool: config.Pool, clock: IReactorTime | None = None) -> Pool:
    """
    The runtime state of a configured pool, every server up.

    @param clock: times its queue and slow start; needed when it has either.
    """
    return Pool(
        pool.name,
        [build_server(server) for server in pool.servers],
        balancer_for(pool.balancer),
        queue_size=pool.queue_size,
        queue_timeout=pool.queue_timeout,
        slow_start=pool.slow_start,
        clock=clock,
    )


class ProxyService(MultiService):
    """
    The root of a running txproxy: one child per listener and per extra service.

    @ivar pools: the runtime pools, by name.
    @ivar listeners: the listener services, in configuration order.
    """

    _log = Logger()

    def __init__(self, proxy: config.Proxy, reactor: IProxyReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.proxy = proxy
        self.pools = {pool.name: build_pool(pool, reactor) for pool in proxy.pools}
        # Before the listeners: children start in order, so servers are
        # checked from the first request on.
        self.health = HealthService(proxy.pools, self.pools, reactor)
        self.health.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.idle = {
            pool.name: IdleUpstreams(reactor, reactor, pool.keepalive, pool.keepalive_timeout)
            for pool in proxy.pools
        }
        self.access_logs: list[AccessLog] = []
        self.listeners: list[ListenerService] = []
        for factory in proxy.services:
            factory.make_service(reactor).setServiceParent(self)  # type: ignore[no-untyped-call]
        self.server_tls: list[ServerTLS] = []
        for listener in proxy.listeners:
            service = self._listener_service(listener, reactor)
            if listener.tls is not None:
                alpn: tuple[bytes, ...] = ()
                if isinstance(listener, config.HTTPListener):
                    alpn = ALPN_HTTP if listener.http2 else (b"http/1.1",)
                service.tls = ServerTLS(listener.tls, alpn)
                self.server_tls.append(service.tls)
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
            self.listeners.append(service)
        self.admin_site: AdminSite | None = None
        self.admin: ListenerService | None = None
        if proxy.admin is not None:
            self.admin_site = AdminSite(
                AdminAPI(self.pools, build_server), reactor, token=proxy.admin.token
            )
            self.admin = ListenerService(
                reactor, proxy.admin.endpoint, self.admin_site, "admin API"
            )
            self.admin.setServiceParent(self)  # type: ignore[no-untyped-call]

    def _listener_service(
        self, listener: config.HTTPListener | config.TCPListener, reactor: IProxyReactor
    ) -> ListenerService:
        if isinstance(listener, config.TCPListener):
            pool = None if listener.pool is None else self.pools[listener.pool.name]
            limits = listener.limits.over(config.TCP_LIMITS)
            assert limits.upstream_connect_timeout is not None
            assert limits.client_idle_timeout is not None
            # The ClientHello is to a TLS relay what the request head is to HTTP.
            assert limits.client_header_timeout is not None
            sni_routes = SNIRoutes(
                (pattern, RelayTarget(self.pools[routed.name], routed.retries))
                for pattern, routed in listener.sni_routes
            )
            factory = RelayFactory(
                pool,
                reactor,
                connect_timeout=limits.upstream_connect_timeout,
                idle_timeout=limits.client_idle_timeout,
                retries=0 if listener.pool is None else listener.pool.retries,
                sni_routes=sni_routes,
                hello_timeout=limits.client_header_timeout,
            )
            summary = "TCP" if pool is None else f"TCP to pool {pool.name}"
            if listener.sni_routes:
                routes = ", ".join(
                    f"{pattern} to {routed.name}" for pattern, routed in listener.sni_routes
                )
                summary = f"{summary}, TLS by server name: {routes}"
            return ListenerService(reactor, listener.endpoint, factory, summary)
        if isinstance(listener, config.HTTPListener):
            access_log = None
            if listener.access_log is not None:
                access_log = AccessLog(listener.access_log.path, listener.access_log.format)
                self.access_logs.append(access_log)
            http = HTTPFactory(listener, self.pools, self.idle, reactor, access_log)
            pools = ", ".join(sorted({route.pool.name for route in listener.routes}))
            if listener.http_to_https is not None:
                summary = f"HTTP redirecting to HTTPS on port {listener.http_to_https}"
            else:
                summary = f"{'HTTPS' if listener.tls else 'HTTP'} to pools {pools}"
            return ListenerService(reactor, listener.endpoint, http, summary)
        raise UnsupportedListener(listener)

    def reload_certificates(self) -> None:
        """
        Read every TLS listener's certificates again, for new handshakes; a
        listener whose new files are bad keeps its certificates.
        """
        for tls in self.server_tls:
            tls.reload()

    def startService(self) -> None:
        self._log.info(
            "txproxy starting: {listeners} listener(s), pools {pools}",
            listeners=len(self.listeners),
            pools=", ".join(
                f"{pool.name} ({len(pool.servers)} servers)" for pool in self.pools.values()
            ),
        )
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[object]:
        """
        Stop the listeners, then close idle upstream connections and logs.
        """
        stopped = maybeDeferred(super().stopService)

        def close(result: object) -> Deferred[object]:
            for access_log in self.access_logs:
                access_log.close()
            closed = gatherResults([idle.close() for idle in self.idle.values()])
            return closed.addCallback(lambda _: result)

        return stopped.addBoth(close)


def makeService(proxy: config.Proxy, reactor: IProxyReactor) -> ProxyService:
    """
    Build the service tree that runs C{proxy} on C{reactor}.

    @raise UnsupportedListener: for a listener kind this version cannot run;
        nothing has started then.
    """
    return ProxyService(proxy, reactor)
