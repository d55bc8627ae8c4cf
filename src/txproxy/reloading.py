# -*- test-case-name: tests.test_reload_service -*-
"""
Reload application: run a new configuration in place of the running one.

L{txproxy.reload.diff} decides what changes; L{Reloader} makes what could
fail first, then applies each change to the running service tree, one step
after the other. It changes the tree only through what L{ProxyTree} names,
which L{txproxy.service.ProxyService} provides.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

from attrs import define, evolve, field
from twisted.application.service import IService
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure

from txproxy import config
from txproxy.balancing import balancer_for
from txproxy.building import (
    access_log_for,
    alpn_for,
    build_pool,
    build_server,
    server_tls_for,
    summary_for,
    upstream_tls_for,
)
from txproxy.health import HealthService
from txproxy.http.accesslog import AccessLog
from txproxy.http.cacheregistry import CacheRegistry
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.interfaces import IBalancer, IProxyReactor, IServiceFactory
from txproxy.listening import ListenerService
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
from txproxy.tcp import RelayFactory
from txproxy.tls import CertificateError, ServerTLS

if TYPE_CHECKING:
    from txproxy.admin import AdminSite

_T = TypeVar("_T")
_P = ParamSpec("_P")


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


class ProxyTree(Protocol):
    """
    The running service tree a L{Reloader} changes: what it runs, and how
    it builds listeners and the parts beside them. It is the
    C{IServiceCollection} the listeners a reload starts join.

    @ivar proxy: the configuration it runs.
    @ivar reactor: the reactor it runs on.
    @ivar pools: the runtime pools, by name.
    @ivar idle: the idle upstream connections of each pool, by name.
    @ivar health: the health checks of the pools.
    @ivar access_logs: the open access logs.
    @ivar caches: the caches of every HTTP listener's routes.
    @ivar listeners: the listener services, in configuration order.
    @ivar extra_services: each L{IServiceFactory} of the configuration,
        with the service it made.
    @ivar admin: the admin endpoint's listener, if any.
    @ivar admin_site: the admin endpoint's site, if any.
    """

    proxy: config.Proxy
    reactor: IProxyReactor
    pools: dict[str, Pool]
    idle: dict[str, IdleUpstreams]
    health: HealthService
    access_logs: list[AccessLog]
    caches: CacheRegistry
    listeners: list[ListenerService]
    extra_services: list[tuple[IServiceFactory, IService]]
    admin: ListenerService | None
    admin_site: AdminSite | None

    def listener_service(
        self, listener: Listener, tls: ServerTLS | None, access_log: AccessLog | None
    ) -> ListenerService:
        """
        The service of a listener, not started.
        """

    def relay(
        self, listener: config.TCPListener, factory: RelayFactory | None = None
    ) -> RelayFactory:
        """
        Give a TCP listener's settings to its relay factory, or make one.
        """

    def start_extra(self, factory: IServiceFactory) -> None:
        """
        Make the service of an L{IServiceFactory} and run it with the others.
        """

    def idle_for(self, settings: config.Pool, pool: Pool) -> IdleUpstreams:
        """
        The idle upstream connections of a pool.
        """

    def admin_service(self, admin: config.Admin) -> ListenerService:
        """
        The admin endpoint's listener for C{admin}, not started.
        """


class Reloader:
    """
    Applies new configurations to a running service tree, one reload after
    the other, changing only what differs.

    @ivar draining: fires for each listener a reload retired, once its
        connections are gone.
    """

    _log = Logger()

    def __init__(self, tree: ProxyTree) -> None:
        """
        @param tree: the service tree to change.
        """
        self._tree = tree
        # Reloads apply one after the other: the last one's steps, chained.
        self._reloads: Deferred[None] = succeed(None)
        # Listeners a reload retired, while their connections drain.
        self.draining: set[Deferred[None]] = set()
        # Servers a reload adds back once their earlier removal is done.
        self._readding: dict[tuple[Pool, str], ServerState] = {}

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
        L{txproxy.service.ProxyService.reload_certificates} does.

        @param proxy: the new configuration, valid.
        @return: the changes, being applied.
        @raise ReloadRefused: when a file the new configuration names cannot
            be used; the running configuration stays.
        """
        changes = diff(self._tree.proxy, proxy)
        running = self._running()
        if running is not self._tree.proxy:
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
        self._tree.proxy = proxy
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
        for declared in self._tree.proxy.pools:
            runtime = self._tree.pools.get(declared.name)
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
            return self._tree.proxy
        return evolve(
            self._tree.proxy,
            listeners=[_with_pools(each, pools) for each in self._tree.proxy.listeners],
        )

    def _enable_from_file(self, proxy: config.Proxy) -> None:
        """
        Bring back the servers of the file that the admin API drained or
        disabled: a reload starts again from the file.
        """
        for declared in proxy.pools:
            runtime = self._tree.pools.get(declared.name)
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
            made = attempt(build_pool, pool, self._tree.reactor)
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
                        upstream_tls_for, server_change.new
                    )
            if "balancer" in change.settings_changed:
                prepared.balancers[change.name] = balancer_for(change.new.balancer)
        started = [*changes.listeners_added]
        started.extend(replaced.new for replaced in changes.listeners_kind_changed)
        started.extend(kept.new for kept in changes.listeners_kept if _restarts(kept))
        for listener in started:
            prepared.server_tls[id(listener)] = attempt(server_tls_for, listener)
            prepared.access_logs[id(listener)] = attempt(access_log_for, listener)
        for kept in changes.listeners_kept:
            if _restarts(kept):
                continue
            if kept.new.tls is not None:
                # Read as configure will, to refuse the reload rather than keep the old.
                attempt(server_tls_for, kept.new)
            if "access_log" in kept.changed:
                prepared.access_logs[id(kept.new)] = attempt(access_log_for, kept.new)
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
            yield self._step(f"service {factory!r} added", self._tree.start_extra, factory)
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
        for service in self._tree.listeners:
            service.drain_timeout = proxy.drain_timeout
        order = {id(listener): index for index, listener in enumerate(proxy.listeners)}
        self._tree.listeners.sort(key=lambda service: order.get(id(service.listener), len(order)))
        self._log.info("reload applied")

    # Extra services

    def _stop_extra(self, factory: IServiceFactory) -> Deferred[object] | None:
        """
        Stop the service of an L{IServiceFactory} no longer configured.

        @return: fires once it has stopped.
        """
        for index, (made_by, service) in enumerate(self._tree.extra_services):
            if made_by == factory:
                del self._tree.extra_services[index]
                stopped: Deferred[object] | None = service.disownServiceParent()  # type: ignore[no-untyped-call]
                return stopped
        return None

    # Pools and servers

    def _add_pool(self, settings: config.Pool, prepared: _Prepared) -> None:
        """
        Run a new pool: its servers, idle upstream connections and checks.
        """
        pool = prepared.pools[settings.name]
        self._tree.idle[settings.name] = self._tree.idle_for(settings, pool)
        self._tree.pools[settings.name] = pool
        self._tree.health.replace(settings, pool)

    def _change_pool(self, change: PoolChange, prepared: _Prepared) -> None:
        """
        Change a kept pool in place: servers added, changed, then removed
        (draining), and its settings.
        """
        pool, idle, new = self._tree.pools[change.name], self._tree.idle[change.name], change.new
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
            self._tree.health.replace(new, pool)
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
        pool, idle = self._tree.pools.pop(name), self._tree.idle.pop(name)
        self._tree.health.remove(name)
        for key in [key for key in self._readding if key[0] is pool]:
            del self._readding[key]
        for server in pool.servers:
            pool.remove(server.address)
        idle.close()

    # Listeners

    def _listener_for(self, listener: Listener) -> ListenerService | None:
        """
        The running service of a listener's configuration, if it runs.
        """
        for service in self._tree.listeners:
            if service.listener is listener:
                return service
        return None

    def _start_listener(self, service: ListenerService, listed: bool = True) -> bool:
        """
        Start a listener while a reload runs; a failure to listen is logged
        loudly and leaves it out.

        @param listed: whether it is one of L{ProxyTree.listeners}.
        @return: whether it started (or will, with the service).
        """
        try:
            service.setServiceParent(self._tree)  # type: ignore[no-untyped-call]
        except Exception:
            self._log.failure(
                "reload: listener {endpoint} could not listen: it is left out",
                endpoint=service.description,
            )
            if service.parent is not None:
                service.disownServiceParent()  # type: ignore[no-untyped-call]
            self._close_access_log(service)
            self._tree.caches.forget(service.factory)
            return False
        if listed:
            self._tree.listeners.append(service)
        return True

    def _retire(self, service: ListenerService) -> Deferred[None]:
        """
        Stop a listener for good: its port closes, then its connections
        finish (for C{drain_timeout} at most) and its access log closes.

        @return: fires once its port is closed, so that another listener may
            take its place; its connections may still be draining.
        """
        if service in self._tree.listeners:
            self._tree.listeners.remove(service)
        self._tree.caches.forget(service.factory)
        service.drain_timeout = self._tree.proxy.drain_timeout

        def drain(_: None) -> None:
            draining: Deferred[None] | None = None
            if service.parent is not None:
                draining = service.disownServiceParent()  # type: ignore[no-untyped-call]
            if draining is None:
                self._close_access_log(service)
                return
            self.draining.add(draining)

            def drained(result: None) -> None:
                self.draining.discard(draining)
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
        if access_log in self._tree.access_logs:
            self._tree.access_logs.remove(access_log)
        access_log.close()

    def _add_listener(self, listener: Listener, prepared: _Prepared) -> None:
        """
        Start a new listener with the TLS and access log made for it.
        """
        key = id(listener)
        service = self._tree.listener_service(
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
            prepared.server_tls[id(new)] = server_tls_for(new)
            prepared.access_logs.setdefault(id(new), access_log_for(new))
            self._add_listener(new, prepared)
            return
        factory = service.factory
        if isinstance(new, config.HTTPListener):
            assert isinstance(factory, HTTPFactory)
            factory.configure(new)
            if id(new) in prepared.access_logs:
                old_log, factory.access_log = factory.access_log, prepared.access_logs[id(new)]
                if factory.access_log is not None:
                    self._tree.access_logs.append(factory.access_log)
                if old_log is not None:
                    self._drop_access_log(old_log)
        else:
            assert isinstance(factory, RelayFactory)
            self._tree.relay(new, factory)
        service.listener = new
        service.description = new.endpoint
        service.summary = summary_for(new)
        if service.tls is not None and new.tls is not None:
            service.tls.configure(new.tls, alpn_for(new))

    # The admin endpoint

    def _apply_admin(self, change: AdminChange) -> Deferred[None]:
        """
        Stop the admin endpoint's listener, if any, then start the one
        L{ProxyTree.admin_service} makes for C{change.new}, if any.

        @return: fires once the new one listens.
        """
        if (
            change.old is not None
            and change.new is not None
            and not change.moved
            and self._tree.admin_site is not None
        ):
            # The same place: the token applies from the next request.
            self._tree.admin_site.token = change.new.token
            return succeed(None)
        old, self._tree.admin = self._tree.admin, None
        stopped = succeed(None) if old is None else self._retire(old)

        def start(_: None) -> None:
            if change.new is None:
                return
            service = self._tree.admin_service(change.new)
            if self._start_listener(service, listed=False):
                self._tree.admin = service

        return stopped.addCallback(start)
