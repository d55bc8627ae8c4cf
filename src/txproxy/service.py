# -*- test-case-name: tests.test_service -*-
"""
Wire a configuration into one service tree: pools, listeners and the services
beside them; reload it in place (through L{txproxy.reloading}), and stop it
gracefully.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from txproxy import config
from txproxy.building import access_log_for, build_pool, build_server, server_tls_for, summary_for
from txproxy.clienthello import SNIRoutes
from txproxy.health import HealthService
from txproxy.http.accesslog import AccessLog
from txproxy.http.cacheregistry import CacheRegistry
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.interfaces import IPoolObserver, IProxyReactor, IServerView, IServiceFactory
from txproxy.listening import ListenerFactory, ListenerService
from txproxy.pool import Pool
from txproxy.reload import Changes, Listener
from txproxy.reloading import Reloader, ReloadRefused
from txproxy.tcp import RelayFactory, RelayTarget
from txproxy.tls import ServerTLS

if TYPE_CHECKING:
    from txproxy.admin import AdminSite

__all__ = [
    "ListenerService",
    "ProxyService",
    "ReloadRefused",
    "UnsupportedListener",
    "build_pool",
    "build_server",
    "makeService",
]


class UnsupportedListener(Exception):
    """
    The configuration asks for a listener this version of txproxy cannot run yet.
    """

    def __init__(self, listener: object) -> None:
        super().__init__(f"{type(listener).__name__} is not supported yet: {listener!r}")
        self.listener = listener


@implementer(IPoolObserver)
class _DropsIdle:
    """
    Closes the idle upstream connections of each server that leaves its pool.
    """

    def __init__(self, idle: IdleUpstreams) -> None:
        self._idle = idle

    def server_released(self, server: IServerView, failed: bool, status: int | None) -> None:
        """
        Nothing to do: a released server keeps its connections.
        """

    def server_added(self, server: IServerView) -> None:
        """
        Nothing to do: a new server has no connections yet.
        """

    def server_removed(self, server: IServerView) -> None:
        self._idle.drop(server.address)


class ProxyService(MultiService):
    """
    The root of a running txproxy: one child per listener and per extra service.

    L{reload} runs a new configuration in place, changing only what differs,
    through its L{Reloader}, which changes it as a L{txproxy.reloading.ProxyTree};
    L{stopService} stops gracefully, within C{Proxy(drain_timeout=)}.

    @ivar proxy: the configuration it runs (the latest reloaded, from the
        moment L{reload} takes it).
    @ivar pools: the runtime pools, by name; a reload changes this mapping
        in place.
    @ivar idle: the idle upstream connections of each pool, by name.
    @ivar listeners: the listener services, in configuration order.
    @ivar extra_services: each L{IServiceFactory} of the configuration,
        with the service it made.
    """

    _log = Logger()

    def __init__(self, proxy: config.Proxy, reactor: IProxyReactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.proxy = proxy
        self.reactor = reactor
        self.pools = {pool.name: build_pool(pool, reactor) for pool in proxy.pools}
        # Before the listeners: children start in order, so servers are
        # checked from the first request on.
        self.health = HealthService(proxy.pools, self.pools, reactor)
        self.health.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.idle = {pool.name: self.idle_for(pool, self.pools[pool.name]) for pool in proxy.pools}
        self.access_logs: list[AccessLog] = []
        # The caches of every HTTP listener's routes, for the admin API's purges.
        self.caches = CacheRegistry()
        self.listeners: list[ListenerService] = []
        self.extra_services: list[tuple[IServiceFactory, IService]] = []
        self._reloader = Reloader(self)
        for factory in proxy.services:
            self.start_extra(factory)
        for listener in proxy.listeners:
            service = self.listener_service(
                listener, server_tls_for(listener), access_log_for(listener)
            )
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
            self.listeners.append(service)
        self.admin_site: AdminSite | None = None
        self.admin: ListenerService | None = None
        if proxy.admin is not None:
            self.admin = self.admin_service(proxy.admin)
            self.admin.setServiceParent(self)  # type: ignore[no-untyped-call]

    # Building: what L{Reloader} uses too, as L{txproxy.reloading.ProxyTree}

    def listener_service(
        self, listener: Listener, tls: ServerTLS | None, access_log: AccessLog | None
    ) -> ListenerService:
        """
        The service of a listener, not started.

        @param tls: its TLS, made by L{server_tls_for}.
        @param access_log: its access log, opened by L{access_log_for}; the
            service closes it with the listener.
        """
        factory: ListenerFactory
        if isinstance(listener, config.TCPListener):
            factory = self.relay(listener)
        elif isinstance(listener, config.HTTPListener):
            if access_log is not None:
                self.access_logs.append(access_log)
            factory = HTTPFactory(
                listener, self.pools, self.idle, self.reactor, access_log, self.caches
            )
        else:
            raise UnsupportedListener(listener)
        return ListenerService(
            self.reactor,
            listener.endpoint,
            factory,
            summary_for(listener),
            tls,
            listener=listener,
            drain_timeout=self.proxy.drain_timeout,
        )

    def relay(
        self, listener: config.TCPListener, factory: RelayFactory | None = None
    ) -> RelayFactory:
        """
        Give a TCP listener's settings to its relay factory, or make one.
        """
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
        retries = 0 if listener.pool is None else listener.pool.retries
        if factory is None:
            return RelayFactory(
                pool,
                self.reactor,
                connect_timeout=limits.upstream_connect_timeout,
                idle_timeout=limits.client_idle_timeout,
                retries=retries,
                sni_routes=sni_routes,
                hello_timeout=limits.client_header_timeout,
            )
        factory.configure(
            pool,
            connect_timeout=limits.upstream_connect_timeout,
            idle_timeout=limits.client_idle_timeout,
            retries=retries,
            sni_routes=sni_routes,
            hello_timeout=limits.client_header_timeout,
        )
        return factory

    def start_extra(self, factory: IServiceFactory) -> None:
        """
        Make the service of an L{IServiceFactory} and run it with the others.
        """
        service = factory.make_service(self.reactor)
        service.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.extra_services.append((factory, service))

    def idle_for(self, settings: config.Pool, pool: Pool) -> IdleUpstreams:
        """
        The idle upstream connections of a pool, closed for each server that
        leaves it, however it leaves (the admin API or a reload).
        """
        idle = IdleUpstreams(
            self.reactor, self.reactor, settings.keepalive, settings.keepalive_timeout
        )
        pool.add_observer(_DropsIdle(idle))
        return idle

    def admin_service(self, admin: config.Admin) -> ListenerService:
        """
        The admin endpoint's listener for C{admin}, not started. Its API reads
        C{self.pools} and C{self.caches} itself, so pools and route caches a
        reload adds or removes show at once.
        """
        # twisted.web is loaded only for a configuration with an admin API.
        from txproxy.admin import AdminAPI, AdminSite

        self.admin_site = AdminSite(
            AdminAPI(self.pools, build_server, cache=self.caches), self.reactor, token=admin.token
        )
        return ListenerService(self.reactor, admin.endpoint, self.admin_site, "admin API")

    # Reload

    def reload_certificates(self) -> None:
        """
        Read every TLS listener's certificates again, for new handshakes; a
        listener whose new files are bad keeps its certificates.
        """
        for service in self.listeners:
            if service.tls is not None:
                service.tls.reload()

    def reload(self, proxy: config.Proxy) -> Changes:
        """
        Run a new configuration in place of the running one, changing only
        what differs: see L{Reloader.reload}.

        @param proxy: the new configuration, valid.
        @return: the changes, being applied.
        @raise ReloadRefused: when a file the new configuration names cannot
            be used; the running configuration stays.
        """
        return self._reloader.reload(proxy)

    def reloaded(self) -> Deferred[None]:
        """
        Fire once every reload asked for so far is applied.
        """
        return self._reloader.reloaded()

    # Running

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
        Stop gracefully: every listener stops accepting, its connections
        finish (HTTP requests in flight are answered, then their connections
        close; TCP relays go on) for C{drain_timeout} seconds at most, and
        those still open then are cut. Then idle upstream connections and
        access logs close.

        @return: fires once every connection is gone.
        """
        for child in self:
            if isinstance(child, ListenerService):
                child.drain_timeout = self.proxy.drain_timeout
        stopped = maybeDeferred(super().stopService)

        def close(result: object) -> Deferred[object]:
            draining = gatherResults(list(self._reloader.draining))

            def closed(_: object) -> Deferred[object]:
                for access_log in list(self.access_logs):
                    access_log.close()
                closing = gatherResults([idle.close() for idle in self.idle.values()])
                return closing.addCallback(lambda _: result)

            return draining.addCallback(closed)

        return stopped.addBoth(close)


def makeService(proxy: config.Proxy, reactor: IProxyReactor) -> ProxyService:
    """
    Build the service tree that runs C{proxy} on C{reactor}.

    @raise UnsupportedListener: for a listener kind this version cannot run;
        nothing has started then.
    @raise CertificateError: when a TLS file cannot be used; nothing has
        started then.
    """
    return ProxyService(proxy, reactor)
