# -*- test-case-name: tests.test_service -*-
"""
Wire a configuration into one service tree: pools, listeners and the services
beside them; reload it in place, and stop it gracefully.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import ParamSpec, TypeVar

from attrs import define, evolve, field
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import (
    Deferred,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy import config
from txproxy.admin import AdminAPI, AdminSite
from txproxy.balancing import balancer_for
from txproxy.clienthello import SNIRoutes
from txproxy.health import HealthService
from txproxy.http.accesslog import AccessLog
from txproxy.http.caching import CacheRegistry
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.interfaces import (
    IBalancer,
    IPoolObserver,
    IProxyReactor,
    IServerView,
    IServiceFactory,
)
from txproxy.pool import NoSuchServer, Pool, ServerState, ServerStatus
from txproxy.reload import (
    SERVER_FIELDS_IN_PLACE,
    AdminChange,
    Changes,
    Listener,
    ListenerChange,
    PoolChange,
    ServerChange,
    diff,
)
from txproxy.tcp import RelayFactory, RelayTarget
from txproxy.tls import ALPN_HTTP, CertificateError, ServerTLS, upstream_tls

_T = TypeVar("_T")
_P = ParamSpec("_P")


class UnsupportedListener(Exception):
    """
    The configuration asks for a listener this version of txproxy cannot run yet.
    """

    def __init__(self, listener: object) -> None:
        super().__init__(f"{type(listener).__name__} is not supported yet: {listener!r}")
        self.listener = listener


class ReloadRefused(Exception):
    """
    A new configuration cannot run: a file it names cannot be used. Nothing
    of it was applied, and the running configuration stays.

    @ivar errors: what is wrong, one message each, such as
        C{"site.pem: no PEM certificate in it"}.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = tuple(errors)


ListenerFactory = RelayFactory | HTTPFactory | AdminSite
"""
The factories a listener may serve with: each can close its connections.
"""

DRAIN_TIMEOUT = 30.0
"""
The seconds a stopping listener lets its connections finish, unless told
otherwise: the default of C{Proxy(drain_timeout=)}.
"""


class ListenerService(Service):
    """
    Listens on one endpoint while running, and says where.

    Stopping is graceful: the port closes, the factory closes its
    connections as each finishes (an HTTP request in flight is answered; a
    TCP relay goes on until either side closes it), and those still open
    after C{drain_timeout} seconds are cut.

    @ivar port: the listening port while running, else L{None}.
    @ivar description: the endpoint string from the configuration.
    @ivar listener: the listener's configuration, or L{None} for a listener
        of txproxy's own (the admin endpoint).
    @ivar drain_timeout: the seconds its connections may take to finish once
        it stops.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IProxyReactor,
        description: str,
        factory: ListenerFactory,
        summary: str,
        tls: ServerTLS | None = None,
        *,
        listener: Listener | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        """
        @param tls: the TLS the listener terminates, or L{None}.
        """
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.summary = summary
        self.tls = tls
        self.listener = listener
        self.drain_timeout = drain_timeout
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

    def stop_listening(self) -> Deferred[None]:
        """
        Close the port, keeping the connections it accepted.

        @return: fires once the port is closed, so that another listener may
            take it.
        """
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def close_connections(self) -> Deferred[None]:
        """
        Close the connections gracefully, and cut those still open after
        C{drain_timeout} seconds.

        @return: fires once every connection is gone.
        """
        closed = self.factory.close_connections()
        if closed.called:
            return closed
        timer = self.reactor.callLater(self.drain_timeout, self._drain_over)

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return closed.addBoth(done)

    def _drain_over(self) -> None:
        """
        The drain time is over: cut what is still open.
        """
        factory = self.factory
        self._log.warn(
            "listener {endpoint}: connections still open after {timeout:g}s of draining are cut",
            endpoint=self.description,
            timeout=self.drain_timeout,
        )
        if isinstance(factory, HTTPFactory | RelayFactory):
            factory.abort_connections()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then close the connections gracefully (see L{close_connections}).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop_listening().addCallback(lambda _: self.close_connections())


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
    @raise CertificateError: when a file of a server's upstream TLS cannot be used.
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


def _upstream_tls(server: config.Server) -> IOpenSSLClientConnectionCreator | None:
    """
    How to speak TLS to a configured server, or L{None} for plain TCP.

    @raise CertificateError: when a file cannot be used.
    """
    if server.tls is None:
        return None
    return upstream_tls(server.tls, server.address.rpartition(":")[0].strip("[]"))


def _alpn(listener: Listener) -> tuple[bytes, ...]:
    """
    What a TLS listener offers by ALPN.
    """
    if isinstance(listener, config.HTTPListener):
        return ALPN_HTTP if listener.http2 else (b"http/1.1",)
    return ()


def _server_tls(listener: Listener) -> ServerTLS | None:
    """
    The TLS a listener terminates, its files read, or L{None}.

    @raise CertificateError: when a file cannot be used.
    """
    return None if listener.tls is None else ServerTLS(listener.tls, _alpn(listener))


def _access_log(listener: Listener) -> AccessLog | None:
    """
    The access log of an HTTP listener, opened, or L{None}.

    @raise OSError: when its file cannot be opened.
    """
    if isinstance(listener, config.HTTPListener) and listener.access_log is not None:
        return AccessLog(listener.access_log.path, listener.access_log.format)
    return None


def _summary(listener: Listener) -> str:
    """
    What a listener does, in a few words, for logs.
    """
    if isinstance(listener, config.TCPListener):
        summary = "TCP" if listener.pool is None else f"TCP to pool {listener.pool.name}"
        if listener.sni_routes:
            routes = ", ".join(
                f"{pattern} to {routed.name}" for pattern, routed in listener.sni_routes
            )
            summary = f"{summary}, TLS by server name: {routes}"
        return summary
    if listener.http_to_https is not None:
        return f"HTTP redirecting to HTTPS on port {listener.http_to_https}"
    pools = ", ".join(sorted({route.pool.name for route in listener.routes}))
    return f"{'HTTPS' if listener.tls else 'HTTP'} to pools {pools}"


_POOL_SETTINGS = frozenset({"balancer", "queue_size", "queue_timeout", "slow_start"})
_KEEPALIVE_SETTINGS = frozenset({"keepalive", "keepalive_timeout"})
_HEALTH_SETTINGS = frozenset({"health", "passive"})


@define
class _Prepared:
    """
    What a reload needs that could fail to make, made before anything changes.

    @ivar pools: the runtime pools of the pools added, by name.
    @ivar servers: the runtime servers added to kept pools, by pool name and address.
    @ivar upstream_tls: the new upstream TLS of kept servers whose C{tls}
        changed, by pool name and address.
    @ivar balancers: the new balancers of kept pools, by name.
    @ivar server_tls: the TLS of the listeners to start anew, by the C{id}
        of their new configuration.
    @ivar access_logs: the access logs of the listeners to start anew and of
        the kept ones whose C{access_log} changed, by the C{id} of their new
        configuration.
    """

    pools: dict[str, Pool] = field(factory=dict)
    servers: dict[tuple[str, str], ServerState] = field(factory=dict)
    upstream_tls: dict[tuple[str, str], IOpenSSLClientConnectionCreator | None] = field(
        factory=dict
    )
    balancers: dict[str, IBalancer] = field(factory=dict)
    server_tls: dict[int, ServerTLS | None] = field(factory=dict)
    access_logs: dict[int, AccessLog | None] = field(factory=dict)

    def close(self) -> None:
        """
        Close the access logs opened for a reload that is refused.
        """
        for access_log in self.access_logs.values():
            if access_log is not None:
                access_log.close()


def _restarts(change: ListenerChange) -> bool:
    """
    Whether a kept listener must stop and start again: TLS was added to it
    or taken off, which the factory under the port cannot change.
    """
    return (change.old.tls is None) != (change.new.tls is None)


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


def _with_pools(listener: Listener, pools: Mapping[str, config.Pool]) -> Listener:
    """
    C{listener} with each pool named in C{pools} replaced by its value there.
    """

    def swap(pool: config.Pool) -> config.Pool:
        return pools.get(pool.name, pool)

    if isinstance(listener, config.HTTPListener):
        return evolve(
            listener, routes=[evolve(route, pool=swap(route.pool)) for route in listener.routes]
        )
    return evolve(
        listener,
        pool=None if listener.pool is None else swap(listener.pool),
        sni_routes=[(pattern, swap(pool)) for pattern, pool in listener.sni_routes],
    )


class ProxyService(MultiService):
    """
    The root of a running txproxy: one child per listener and per extra service.

    L{reload} runs a new configuration in place, changing only what differs;
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
        self.idle = {pool.name: self._idle_for(pool, self.pools[pool.name]) for pool in proxy.pools}
        self.access_logs: list[AccessLog] = []
        # The caches of every HTTP listener's routes, for the admin API's purges.
        self.caches = CacheRegistry()
        self.listeners: list[ListenerService] = []
        self.extra_services: list[tuple[IServiceFactory, IService]] = []
        # Reloads apply one after the other: the last one's steps, chained.
        self._reloads: Deferred[None] = succeed(None)
        # Listeners a reload retired, while their connections drain.
        self._draining: set[Deferred[None]] = set()
        # Servers a reload adds back once their earlier removal is done.
        self._readding: dict[tuple[Pool, str], ServerState] = {}
        for factory in proxy.services:
            self._start_extra(factory)
        for listener in proxy.listeners:
            service = self._listener_service(listener, _server_tls(listener), _access_log(listener))
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
            self.listeners.append(service)
        self.admin_site: AdminSite | None = None
        self.admin: ListenerService | None = None
        if proxy.admin is not None:
            self.admin = self._admin_service(proxy.admin)
            self.admin.setServiceParent(self)  # type: ignore[no-untyped-call]

    def _listener_service(
        self, listener: Listener, tls: ServerTLS | None, access_log: AccessLog | None
    ) -> ListenerService:
        """
        The service of a listener, not started.

        @param tls: its TLS, made by L{_server_tls}.
        @param access_log: its access log, opened by L{_access_log}; the
            service closes it with the listener.
        """
        factory: ListenerFactory
        if isinstance(listener, config.TCPListener):
            factory = self._relay(listener)
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
            _summary(listener),
            tls,
            listener=listener,
            drain_timeout=self.proxy.drain_timeout,
        )

    def _relay(
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

    def _start_extra(self, factory: IServiceFactory) -> None:
        """
        Make the service of an L{IServiceFactory} and run it with the others.
        """
        service = factory.make_service(self.reactor)
        service.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.extra_services.append((factory, service))

    def reload_certificates(self) -> None:
        """
        Read every TLS listener's certificates again, for new handshakes; a
        listener whose new files are bad keeps its certificates.
        """
        for service in self.listeners:
            if service.tls is not None:
                service.tls.reload()

    # Reload

    def reload(self, proxy: config.Proxy) -> Changes:
        """
        Run a new configuration in place of the running one, changing only
        what differs (L{txproxy.reload.diff}).

        Everything that may fail is made first: the TLS of listeners and
        servers, access logs, pools. If anything fails, nothing changes.
        Then each change is logged and applied in the order L{Changes}
        gives, each step after the one before (and after any reload before
        it) is done: L{reloaded} fires once all are. Listeners that stay in
        their place keep their sockets and connections; removed servers
        drain; new routes take each next request. A step that still fails is
        logged as critical, and the others go on.

        Certificates of the TLS listeners kept are read again, as
        L{reload_certificates} does.

        @param proxy: the new configuration, valid.
        @return: the changes, being applied.
        @raise ReloadRefused: when a file the new configuration names cannot
            be used; the running configuration stays.
        """
        changes = diff(self.proxy, proxy)
        running = self._running()
        if running is not self.proxy:
            # Servers are compared with what the pools have now, so that the
            # admin API's changes are undone; listeners keep their identity.
            changes = evolve(changes, pools_changed=diff(running, proxy).pools_changed)
        prepared = self._prepare(changes)
        lines = changes.describe()
        if not lines:
            self._log.info("reload: no change to apply")
        for line in lines:
            if changes.refuses_connections:
                self._log.warn("reload: {change}", change=line)
            else:
                self._log.info("reload: {change}", change=line)
        self.proxy = proxy
        self._reloads.addCallback(lambda _: self._apply(changes, prepared, proxy))
        # Each step is guarded; this keeps the chain going should the rest fail.
        self._reloads.addErrback(
            lambda reason: self._log.failure("reload: could not be applied", reason)
        )
        return changes

    def _running(self) -> config.Proxy:
        """
        The running configuration as the admin API has left it: each pool's
        servers are those it has now, with their weights, so that a reload
        starts again from the file, as a restart would. A server the API
        added and the file does not list is removed; one the API removed and
        the file lists comes back.
        """
        pools: dict[str, config.Pool] = {}
        for declared in self.proxy.pools:
            runtime = self.pools.get(declared.name)
            if runtime is None:
                continue
            by_address = {server.address: server for server in declared.servers}
            servers = []
            for state in runtime.servers:
                if runtime.removing(state.address):
                    continue
                server = by_address.get(state.address) or config.Server(state.address)
                servers.append(
                    evolve(
                        server,
                        weight=state.configured_weight,
                        backup=state.backup,
                        max_connections=state.max_connections,
                    )
                )
            if servers and servers != list(declared.servers):
                pools[declared.name] = evolve(declared, servers=servers)
        if not pools:
            return self.proxy
        return evolve(
            self.proxy, listeners=[_with_pools(each, pools) for each in self.proxy.listeners]
        )

    def _enable_from_file(self, proxy: config.Proxy) -> None:
        """
        Bring back the servers of the file that the admin API drained or
        disabled: a reload starts again from the file.
        """
        for declared in proxy.pools:
            runtime = self.pools.get(declared.name)
            if runtime is None:
                continue
            for server in declared.servers:
                try:
                    state = runtime.server(server.address)
                except NoSuchServer:
                    continue
                if state.status in (ServerStatus.DRAINING, ServerStatus.DISABLED) and not (
                    runtime.removing(server.address)
                ):
                    self._log.info(
                        "reload: server {server} of pool {pool} enabled again, as the file says",
                        server=server.address,
                        pool=declared.name,
                    )
                    runtime.enable(server.address)

    def reloaded(self) -> Deferred[None]:
        """
        Fire once every reload asked for so far is applied.
        """
        done: Deferred[None] = Deferred()

        def fire(result: None) -> None:
            done.callback(None)
            return result

        self._reloads.addCallback(fire)
        return done

    def _prepare(self, changes: Changes) -> _Prepared:
        """
        Make what the changes need that could fail, without changing anything.

        @raise ReloadRefused: with every failure.
        """
        prepared = _Prepared()
        errors: list[str] = []

        def attempt(make: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
            try:
                return make(*args, **kwargs)
            except CertificateError as e:
                errors.append(str(e))
            except OSError as e:
                errors.append(f"{e.filename}: {e.strerror}" if e.filename else str(e))
            return None

        for pool in changes.pools_added:
            made = attempt(build_pool, pool, self.reactor)
            if made is not None:
                prepared.pools[pool.name] = made
        for change in changes.pools_changed:
            for server in change.servers_added:
                state = attempt(build_server, server)
                if state is not None:
                    prepared.servers[change.name, server.address] = state
            for server_change in change.servers_changed:
                if "tls" in server_change.changed:
                    prepared.upstream_tls[change.name, server_change.address] = attempt(
                        _upstream_tls, server_change.new
                    )
            if "balancer" in change.settings_changed:
                prepared.balancers[change.name] = balancer_for(change.new.balancer)
        started = [*changes.listeners_added]
        started.extend(replaced.new for replaced in changes.listeners_kind_changed)
        started.extend(kept.new for kept in changes.listeners_kept if _restarts(kept))
        for listener in started:
            prepared.server_tls[id(listener)] = attempt(_server_tls, listener)
            prepared.access_logs[id(listener)] = attempt(_access_log, listener)
        for kept in changes.listeners_kept:
            if _restarts(kept):
                continue
            if kept.new.tls is not None:
                # Read as configure will, to refuse the reload rather than keep the old.
                attempt(_server_tls, kept.new)
            if "access_log" in kept.changed:
                prepared.access_logs[id(kept.new)] = attempt(_access_log, kept.new)
        if errors:
            prepared.close()
            raise ReloadRefused(errors)
        return prepared

    def _step(self, change: str, step: Callable[..., object], *args: object) -> Deferred[object]:
        """
        Apply one step of a reload; if it fails, log it loudly and go on.

        @param change: what the step does, for the log.
        """

        def failed(reason: Failure) -> None:
            self._log.failure(
                "reload: {change}: could not be applied; the rest of the reload goes on",
                reason,
                change=change,
            )

        return maybeDeferred(step, *args).addErrback(failed)

    @inlineCallbacks
    def _apply(
        self, changes: Changes, prepared: _Prepared, proxy: config.Proxy
    ) -> Generator[Deferred[object], object, None]:
        """
        Apply the changes in their order, each step after the one before.
        """
        for factory in changes.services_removed:
            yield self._step(f"service {factory!r} removed", self._stop_extra, factory)
        for factory in changes.services_added:
            yield self._step(f"service {factory!r} added", self._start_extra, factory)
        for pool in changes.pools_added:
            yield self._step(f"pool {pool.name} added", self._add_pool, pool, prepared)
        for change in changes.pools_changed:
            yield self._step(f"pool {change.name} changed", self._change_pool, change, prepared)
        for listener in changes.listeners_removed:
            service = self._listener_for(listener)
            if service is not None:
                yield self._step(f"listener {listener.endpoint} removed", self._retire, service)
        if changes.admin is not None:
            yield self._step("admin changed", self._apply_admin, changes.admin)
        for replaced in changes.listeners_kind_changed:
            yield self._step(
                f"listener {replaced.endpoint} replaced",
                self._restart,
                replaced.old,
                replaced.new,
                prepared,
            )
        for kept in changes.listeners_kept:
            if _restarts(kept):
                self._log.warn(
                    "reload: listener {endpoint}: TLS {how}: restarted, refusing connections"
                    " briefly",
                    endpoint=kept.endpoint,
                    how="added" if kept.new.tls is not None else "removed",
                )
                yield self._step(
                    f"listener {kept.endpoint} restarted",
                    self._restart,
                    kept.old,
                    kept.new,
                    prepared,
                )
            else:
                yield self._step(
                    f"listener {kept.endpoint} changed", self._reconfigure, kept, prepared
                )
        for listener in changes.listeners_added:
            yield self._step(
                f"listener {listener.endpoint} added", self._add_listener, listener, prepared
            )
        for name in changes.pools_removed:
            yield self._step(f"pool {name} removed", self._remove_pool, name)
        self._enable_from_file(proxy)
        for service in self.listeners:
            service.drain_timeout = proxy.drain_timeout
        order = {id(listener): index for index, listener in enumerate(proxy.listeners)}
        self.listeners.sort(key=lambda service: order.get(id(service.listener), len(order)))
        self._log.info("reload applied")

    # Reload: extra services

    def _stop_extra(self, factory: IServiceFactory) -> Deferred[object] | None:
        """
        Stop the service of an L{IServiceFactory} no longer configured.

        @return: fires once it has stopped.
        """
        for index, (made_by, service) in enumerate(self.extra_services):
            if made_by == factory:
                del self.extra_services[index]
                stopped: Deferred[object] | None = service.disownServiceParent()  # type: ignore[no-untyped-call]
                return stopped
        return None

    # Reload: pools and servers

    def _idle_for(self, settings: config.Pool, pool: Pool) -> IdleUpstreams:
        """
        The idle upstream connections of a pool, closed for each server that
        leaves it, however it leaves (the admin API or a reload).
        """
        idle = IdleUpstreams(
            self.reactor, self.reactor, settings.keepalive, settings.keepalive_timeout
        )
        pool.add_observer(_DropsIdle(idle))
        return idle

    def _add_pool(self, settings: config.Pool, prepared: _Prepared) -> None:
        """
        Run a new pool: its servers, idle upstream connections and checks.
        """
        pool = prepared.pools[settings.name]
        self.idle[settings.name] = self._idle_for(settings, pool)
        self.pools[settings.name] = pool
        self.health.replace(settings, pool)

    def _change_pool(self, change: PoolChange, prepared: _Prepared) -> None:
        """
        Change a kept pool in place: servers added, changed, then removed
        (draining), and its settings.
        """
        pool, idle, new = self.pools[change.name], self.idle[change.name], change.new
        for server in change.servers_added:
            self._add_server(pool, idle, prepared.servers[change.name, server.address])
        for server_change in change.servers_changed:
            self._change_server(pool, idle, server_change, prepared)
        settings = frozenset(change.settings_changed)
        if settings & _POOL_SETTINGS:
            pool.configure(
                balancer=prepared.balancers.get(change.name, pool.balancer),
                queue_size=new.queue_size,
                queue_timeout=new.queue_timeout,
                slow_start=new.slow_start,
            )
        if settings & _KEEPALIVE_SETTINGS:
            idle.configure(new.keepalive, new.keepalive_timeout)
        if settings & _HEALTH_SETTINGS:
            self.health.replace(new, pool)
        # The pool's retries are copied by the listeners' factories, which
        # every kept listener's reconfiguring refreshes.
        for address in change.servers_removed:
            self._remove_server(pool, idle, address)

    def _add_server(self, pool: Pool, idle: IdleUpstreams, server: ServerState) -> None:
        """
        Add a server to a pool.

        A server of that address may be there already: one the admin API
        added takes the file's settings in place; one still draining from an
        earlier removal is added anew once that removal is done.
        """
        try:
            existing = pool.server(server.address)
        except NoSuchServer:
            pool.add(server)
            return
        if existing.status is ServerStatus.DRAINING:
            self._log.info(
                "reload: server {server} of pool {pool} is still draining: it is added"
                " back once drained",
                server=server.address,
                pool=pool.name,
            )
            self._readding[pool, server.address] = server
            # Removing a server that is leaving only waits for it to be out.
            pool.remove(server.address).addCallback(self._server_left, pool, idle, server.address)
            return
        self._log.info(
            "reload: server {server} of pool {pool} was there already: it takes the"
            " configured settings",
            server=server.address,
            pool=pool.name,
        )
        pool.update(
            server.address,
            weight=server.configured_weight,
            backup=server.backup,
            max_connections=server.max_connections,
        )
        if existing.tls is not server.tls:
            existing.tls = server.tls
            idle.drop(server.address)

    def _change_server(
        self, pool: Pool, idle: IdleUpstreams, change: ServerChange, prepared: _Prepared
    ) -> None:
        """
        Give a kept server its new settings in place.

        A new C{tls} replaces how new connections to it speak TLS, and its
        idle connections close; exchanges in flight finish on theirs, which
        then close too. That is simpler than draining it and adding it back
        under the same address, and keeps its counters and health.

        A server the admin API took out of the pool since the last reload
        stays out, as L{_remove_server} leaves it: its new settings are
        dropped, and the rest of the pool's changes go on.
        """
        new = change.new
        state = self._readding.get((pool, change.address))
        if state is None:
            try:
                state = pool.server(change.address)
            except NoSuchServer:
                self._log.info(
                    "reload: server {server} of pool {pool} was gone already: its new"
                    " settings are not applied",
                    server=change.address,
                    pool=pool.name,
                )
                return
            if set(change.changed) & SERVER_FIELDS_IN_PLACE:
                pool.update(
                    change.address,
                    weight=new.weight,
                    backup=new.backup,
                    max_connections=new.max_connections,
                )
        else:
            # Not back in its pool yet: it goes back with the new settings.
            state.configured_weight = new.weight
            state.weight = state.full_weight
            state.backup = new.backup
            state.max_connections = new.max_connections
        if "tls" in change.changed:
            state.tls = prepared.upstream_tls[pool.name, change.address]
            idle.drop(change.address)

    def _remove_server(self, pool: Pool, idle: IdleUpstreams, address: str) -> None:
        """
        Drain a server and take it out of its pool once its requests and
        relays in flight are done; its idle connections close now, and those
        in flight once their exchange is over.
        """
        if self._readding.pop((pool, address), None) is not None:
            return  # Still draining from before: it stays out.
        try:
            removed = pool.remove(address)
        except NoSuchServer:
            self._log.info(
                "reload: server {server} of pool {pool} was gone already",
                server=address,
                pool=pool.name,
            )
            return
        idle.drop(address)
        removed.addCallback(self._server_left, pool, idle, address)

    def _server_left(self, _: None, pool: Pool, idle: IdleUpstreams, address: str) -> None:
        """
        A server a reload removed is out of its pool: close what is left of
        its idle connections, and add it back if the configuration has it again.
        """
        idle.drop(address)
        server = self._readding.pop((pool, address), None)
        self._log.info(
            "reload: server {server} of pool {pool} drained{back}",
            server=address,
            pool=pool.name,
            back=" and added back" if server is not None else "",
        )
        if server is not None:
            pool.add(server)

    def _remove_pool(self, name: str) -> None:
        """
        Forget a pool no listener uses any more: its checks stop, its servers
        drain, its idle connections close.
        """
        pool, idle = self.pools.pop(name), self.idle.pop(name)
        self.health.remove(name)
        for key in [key for key in self._readding if key[0] is pool]:
            del self._readding[key]
        for server in pool.servers:
            pool.remove(server.address)
        idle.close()

    # Reload: listeners

    def _listener_for(self, listener: Listener) -> ListenerService | None:
        """
        The running service of a listener's configuration, if it runs.
        """
        for service in self.listeners:
            if service.listener is listener:
                return service
        return None

    def _start_listener(self, service: ListenerService, listed: bool = True) -> bool:
        """
        Start a listener while a reload runs; a failure to listen is logged
        loudly and leaves it out.

        @param listed: whether it is one of L{listeners}.
        @return: whether it started (or will, with the service).
        """
        try:
            service.setServiceParent(self)  # type: ignore[no-untyped-call]
        except Exception:
            self._log.failure(
                "reload: listener {endpoint} could not listen: it is left out",
                endpoint=service.description,
            )
            if service.parent is not None:
                service.disownServiceParent()  # type: ignore[no-untyped-call]
            self._close_access_log(service)
            self.caches.forget(service.factory)
            return False
        if listed:
            self.listeners.append(service)
        return True

    def _retire(self, service: ListenerService) -> Deferred[None]:
        """
        Stop a listener for good: its port closes, then its connections
        finish (for C{drain_timeout} at most) and its access log closes.

        @return: fires once its port is closed, so that another listener may
            take its place; its connections may still be draining.
        """
        if service in self.listeners:
            self.listeners.remove(service)
        self.caches.forget(service.factory)
        service.drain_timeout = self.proxy.drain_timeout

        def drain(_: None) -> None:
            draining: Deferred[None] | None = None
            if service.parent is not None:
                draining = service.disownServiceParent()  # type: ignore[no-untyped-call]
            if draining is None:
                self._close_access_log(service)
                return
            self._draining.add(draining)

            def drained(result: None) -> None:
                self._draining.discard(draining)
                self._close_access_log(service)

            draining.addBoth(drained)

        return service.stop_listening().addCallback(drain)

    def _close_access_log(self, service: ListenerService) -> None:
        """
        Close the access log of a listener that has stopped.
        """
        factory = service.factory
        if isinstance(factory, HTTPFactory) and factory.access_log is not None:
            self._drop_access_log(factory.access_log)

    def _drop_access_log(self, access_log: AccessLog) -> None:
        """
        Close an access log no listener writes to any more.
        """
        if access_log in self.access_logs:
            self.access_logs.remove(access_log)
        access_log.close()

    def _add_listener(self, listener: Listener, prepared: _Prepared) -> None:
        """
        Start a new listener with the TLS and access log made for it.
        """
        key = id(listener)
        service = self._listener_service(
            listener, prepared.server_tls[key], prepared.access_logs[key]
        )
        self._start_listener(service)

    @inlineCallbacks
    def _restart(
        self, old: Listener, new: Listener, prepared: _Prepared
    ) -> Generator[Deferred[None], object, None]:
        """
        Stop a listener and start one in its place: connections are refused
        in between. The old one's connections drain meanwhile.
        """
        service = self._listener_for(old)
        if service is not None:
            yield self._retire(service)
        self._add_listener(new, prepared)

    def _reconfigure(self, change: ListenerChange, prepared: _Prepared) -> None:
        """
        Give a kept listener its new settings, keeping its socket and its
        connections: an HTTP listener's next requests follow its new routes,
        a TCP listener's relays go on. Its TLS takes the new settings and
        reads its files again.
        """
        new = change.new
        service = self._listener_for(change.old)
        if service is None:
            # It could not listen after an earlier reload: try again.
            prepared.server_tls[id(new)] = _server_tls(new)
            prepared.access_logs.setdefault(id(new), _access_log(new))
            self._add_listener(new, prepared)
            return
        factory = service.factory
        if isinstance(new, config.HTTPListener):
            assert isinstance(factory, HTTPFactory)
            factory.configure(new)
            if id(new) in prepared.access_logs:
                old_log, factory.access_log = factory.access_log, prepared.access_logs[id(new)]
                if factory.access_log is not None:
                    self.access_logs.append(factory.access_log)
                if old_log is not None:
                    self._drop_access_log(old_log)
        else:
            assert isinstance(factory, RelayFactory)
            self._relay(new, factory)
        service.listener = new
        service.description = new.endpoint
        service.summary = _summary(new)
        if service.tls is not None and new.tls is not None:
            service.tls.configure(new.tls, _alpn(new))

    # Reload: the admin endpoint

    def _apply_admin(self, change: AdminChange) -> Deferred[None]:
        """
        Stop the admin endpoint's listener, if any, then start the one
        L{_admin_service} makes for C{change.new}, if any.

        @return: fires once the new one listens.
        """
        if (
            change.old is not None
            and change.new is not None
            and not change.moved
            and self.admin_site is not None
        ):
            # The same place: the token applies from the next request.
            self.admin_site.token = change.new.token
            return succeed(None)
        old, self.admin = self.admin, None
        stopped = succeed(None) if old is None else self._retire(old)

        def start(_: None) -> None:
            if change.new is None:
                return
            service = self._admin_service(change.new)
            if self._start_listener(service, listed=False):
                self.admin = service

        return stopped.addCallback(start)

    def _admin_service(self, admin: config.Admin) -> ListenerService:
        """
        The admin endpoint's listener for C{admin}, not started. Its API reads
        C{self.pools} and C{self.caches} itself, so pools and route caches a
        reload adds or removes show at once.
        """
        self.admin_site = AdminSite(
            AdminAPI(self.pools, build_server, cache=self.caches), self.reactor, token=admin.token
        )
        return ListenerService(self.reactor, admin.endpoint, self.admin_site, "admin API")

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
            draining = gatherResults(list(self._draining))

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
