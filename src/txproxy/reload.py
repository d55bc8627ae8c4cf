# -*- test-case-name: tests.test_reload -*-
"""
Reload diffing: what changes between a running configuration and a new one, as a value.

L{diff} is pure. It compares two valid L{config.Proxy} values and says what
to start, stop, drain or update, in an order that is safe to apply; the
service tree applies it, and logs L{Changes.describe}. Keeping the decision
here lets every reload case be tested without a reactor, and lets the service
code do nothing but follow the list.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, TypeAlias

from attrs import fields, frozen, has

from txproxy import config
from txproxy.config import _listening_key

if TYPE_CHECKING:
    from txproxy.interfaces import IServiceFactory

__all__ = [
    "SERVER_FIELDS_IN_PLACE",
    "AdminChange",
    "Changes",
    "Listener",
    "ListenerChange",
    "ListenerKindChange",
    "PoolChange",
    "ServerChange",
    "diff",
]

Listener: TypeAlias = config.HTTPListener | config.TCPListener
"""
A listener of either kind, as L{config.Proxy.listeners} holds them.
"""

SERVER_FIELDS_IN_PLACE = frozenset({"weight", "backup", "max_connections"})
"""
The settings of a L{config.Server} that its running state takes in place,
keeping its connections, counters and health; a change to any other (C{tls})
replaces the server: the old one drains and a new one starts.
"""


@frozen
class ServerChange:
    """
    A server kept by its address whose settings differ.

    @ivar old: the server as configured before.
    @ivar new: the server as configured now.
    @ivar changed: the names of the fields that differ, in field order.
    """

    old: config.Server
    new: config.Server
    changed: tuple[str, ...]

    @property
    def address(self) -> str:
        """
        The address, the same in both.
        """
        return self.new.address

    @property
    def in_place(self) -> bool:
        """
        Whether every change is in L{SERVER_FIELDS_IN_PLACE}; if not, the
        running server must drain and a new one take its place.
        """
        return set(self.changed) <= SERVER_FIELDS_IN_PLACE


@frozen
class PoolChange:
    """
    A pool kept by its name whose servers or settings differ.

    Apply in field order: add servers first, so that removing the last old
    one never leaves the pool empty.

    @ivar old: the pool as configured before.
    @ivar new: the pool as configured now.
    @ivar servers_added: servers with an address the pool did not have, in
        the new order.
    @ivar servers_changed: servers kept by address whose settings differ.
    @ivar servers_removed: the addresses of servers no longer in the pool, in
        the old order; each drains: no new requests, in-flight ones finish,
        then its idle connections close.
    @ivar settings_changed: the names of the pool's other fields that differ
        (C{balancer}, C{health}, C{retries}, C{queue_size}, C{queue_timeout},
        C{keepalive}, C{keepalive_timeout}, and any added later). A balancer
        given as an L{IBalancer} provider compares by its own equality: an
        object without one is new on each run of the file, so it counts as
        changed on every reload.
    """

    old: config.Pool
    new: config.Pool
    servers_added: tuple[config.Server, ...]
    servers_changed: tuple[ServerChange, ...]
    servers_removed: tuple[str, ...]
    settings_changed: tuple[str, ...]

    @property
    def name(self) -> str:
        """
        The pool's name, the same in both.
        """
        return self.new.name

    @property
    def empty(self) -> bool:
        """
        Whether nothing differs.
        """
        return not (
            self.servers_added
            or self.servers_changed
            or self.servers_removed
            or self.settings_changed
        )


@frozen
class ListenerChange:
    """
    A listener kept, of the same kind, in the same place: its socket stays
    and its factory takes the new settings.

    L{Changes.listeners_kept} lists every such listener, changed or not,
    because a factory may hold values of the old configuration that this
    comparison ignores on purpose: routes compare their pools by name, so a
    route whose pool's C{retries} changed is unchanged here, while a factory
    that copied C{retries} from the route is stale. Giving every kept
    factory its C{new} listener is cheap and always right.

    @ivar old: the listener as configured before.
    @ivar new: the listener as configured now.
    @ivar changed: the names of the fields that differ, in field order, with
        pools compared by name. C{endpoint} means the endpoint is written
        differently but listens in the same place: the socket is kept, and
        options that do not change the place (such as C{backlog}) apply
        from the next restart.
    """

    old: Listener
    new: Listener
    changed: tuple[str, ...]

    @property
    def endpoint(self) -> str:
        """
        The endpoint as written now.
        """
        return self.new.endpoint

    @property
    def empty(self) -> bool:
        """
        Whether nothing differs.
        """
        return not self.changed


@frozen
class ListenerKindChange:
    """
    A listener in the same place that changed between HTTP and TCP.

    Its factory cannot take the other kind's settings, so the old listener
    must stop and the new one start in its place: connections to it are
    refused between the two.

    @ivar old: the listener as configured before.
    @ivar new: the listener as configured now.
    """

    old: Listener
    new: Listener

    @property
    def endpoint(self) -> str:
        """
        The endpoint as written now.
        """
        return self.new.endpoint


@frozen
class AdminChange:
    """
    The admin endpoint was added, removed, moved, or changed in place.

    @ivar old: the admin endpoint before, or L{None} when there was none.
    @ivar new: the admin endpoint now, or L{None} when there is none.
    @ivar changed: the names of the fields that differ, when both exist.
    """

    old: config.Admin | None
    new: config.Admin | None
    changed: tuple[str, ...] = ()

    @property
    def moved(self) -> bool:
        """
        Whether it listens in another place now, so that its listener must
        stop and start again; otherwise a change keeps its socket.
        """
        if self.old is None or self.new is None:
            return False
        return _place(self.old.endpoint) != _place(self.new.endpoint)


@frozen
class Changes:
    """
    Everything that differs between two configurations, in the order to apply it.

    The fields are listed in that order, and L{describe} follows it. Each
    step waits for the one before (stopping a listener is asynchronous):
    services stop before new ones start, as a new one may take the old
    one's port; new pools exist before listeners route to them; removed
    listeners and a moved admin endpoint free their ports before new
    listeners bind; a pool is removed last, when no listener routes to it.

    @ivar services_removed: L{IServiceFactory} providers no longer listed,
        compared by equality: their services stop.
    @ivar services_added: providers newly listed: their services start.
    @ivar pools_added: pools with a new name, whole.
    @ivar pools_changed: pools kept by name whose servers or settings differ.
    @ivar listeners_removed: listeners whose place no new listener takes:
        they stop listening, then their connections close.
    @ivar admin: how the admin endpoint changed, or L{None} if it did not.
    @ivar listeners_kind_changed: listeners in the same place that changed
        between HTTP and TCP: stopped and started, refusing connections
        briefly.
    @ivar listeners_kept: every listener in the same place with the same
        kind, changed or not: each keeps its socket and its factory takes
        the new settings (see L{ListenerChange}).
    @ivar listeners_added: listeners in new places, in the new order.
    @ivar pools_removed: the names of pools no listener uses any more: their
        servers drain.
    """

    services_removed: tuple[IServiceFactory, ...] = ()
    services_added: tuple[IServiceFactory, ...] = ()
    pools_added: tuple[config.Pool, ...] = ()
    pools_changed: tuple[PoolChange, ...] = ()
    listeners_removed: tuple[Listener, ...] = ()
    admin: AdminChange | None = None
    listeners_kind_changed: tuple[ListenerKindChange, ...] = ()
    listeners_kept: tuple[ListenerChange, ...] = ()
    listeners_added: tuple[Listener, ...] = ()
    pools_removed: tuple[str, ...] = ()

    @property
    def listeners_changed(self) -> tuple[ListenerChange, ...]:
        """
        The kept listeners whose settings differ.
        """
        return tuple(change for change in self.listeners_kept if not change.empty)

    @property
    def refuses_connections(self) -> bool:
        """
        Whether applying the changes refuses connections to a place that
        keeps listening, as when a listener changes between HTTP and TCP;
        a reload that does should be logged as a warning.
        """
        return bool(self.listeners_kind_changed)

    @property
    def empty(self) -> bool:
        """
        Whether there is nothing to apply: a kept listener with no change
        does not count.
        """
        return not (
            self.services_removed
            or self.services_added
            or self.pools_added
            or self.pools_changed
            or self.listeners_removed
            or self.admin is not None
            or self.listeners_kind_changed
            or self.listeners_changed
            or self.listeners_added
            or self.pools_removed
        )

    def describe(self) -> list[str]:
        """
        One log line a change, in the order to apply them.

        @return: lines such as C{"pool api: server 10.0.0.3:80 added"}; none
            when L{empty}.
        """
        lines = [f"service {service!r} removed" for service in self.services_removed]
        lines.extend(f"service {service!r} added" for service in self.services_added)
        for pool in self.pools_added:
            lines.append(f"pool {pool.name} added ({_count(len(pool.servers), 'server')})")
        for change in self.pools_changed:
            lines.extend(_describe_pool(change))
        for listener in self.listeners_removed:
            lines.append(f"listener {listener.endpoint} removed ({_kind(listener)})")
        if self.admin is not None:
            lines.append(_describe_admin(self.admin))
        for replaced in self.listeners_kind_changed:
            lines.append(
                f"listener {replaced.endpoint}: {_kind(replaced.old)} replaced by"
                f" {_kind(replaced.new)} (restarted: connections are refused briefly)"
            )
        for kept in self.listeners_changed:
            lines.append(
                f"listener {kept.endpoint}: {', '.join(kept.changed)} changed (kept its socket)"
            )
        for listener in self.listeners_added:
            lines.append(f"listener {listener.endpoint} added ({_kind(listener)})")
        lines.extend(f"pool {name} removed (its servers drain)" for name in self.pools_removed)
        return lines


def diff(old: config.Proxy, new: config.Proxy) -> Changes:
    """
    Compare the running configuration with a new one.

    Pools match by name, servers by address, listeners by the place they
    listen in (the key L{config.Proxy} uses to refuse two listeners on one
    port, so C{"tcp:8080"} and C{"tcp:port=8080"} are the same place).
    Listeners that let the system pick their port (C{tcp:0}) have no place
    and match by their endpoint string, the first such listener of a string
    with the first of the new configuration, and so on. Everything else
    compares by C{attrs} equality, except that a pool inside a route or
    listener compares by name: routes reach pools by name at run time, and a
    change to a pool's servers is the pool's change, not its routes'.

    @param old: the running configuration.
    @param new: the configuration to run, already valid.
    @return: the changes, empty when the two run the same proxy.
    """
    services_removed, services_added = _unmatched(old.services, new.services)
    old_pools = {pool.name: pool for pool in old.pools}
    new_pools = {pool.name: pool for pool in new.pools}
    pool_changes = (
        _pool_change(old_pools[pool.name], pool) for pool in new.pools if pool.name in old_pools
    )
    old_listeners = _by_place(old.listeners)
    new_listeners = _by_place(new.listeners)
    kind_changed = []
    kept = []
    for place, listener in new_listeners.items():
        before = old_listeners.get(place)
        if before is None:
            continue
        if type(before) is type(listener):
            kept.append(ListenerChange(before, listener, _changed_fields(before, listener)))
        else:
            kind_changed.append(ListenerKindChange(before, listener))
    return Changes(
        services_removed=services_removed,
        services_added=services_added,
        pools_added=tuple(pool for pool in new.pools if pool.name not in old_pools),
        pools_changed=tuple(change for change in pool_changes if not change.empty),
        listeners_removed=tuple(
            listener for place, listener in old_listeners.items() if place not in new_listeners
        ),
        admin=_admin_change(old.admin, new.admin),
        listeners_kind_changed=tuple(kind_changed),
        listeners_kept=tuple(kept),
        listeners_added=tuple(
            listener for place, listener in new_listeners.items() if place not in old_listeners
        ),
        pools_removed=tuple(name for name in old_pools if name not in new_pools),
    )


@frozen
class _PoolName:
    """
    A pool as a route or listener refers to it when compared: by name.
    """

    name: str


@frozen
class _Unplaced:
    """
    The place of a listener that has none of its own (port 0): its endpoint
    string and how many listeners before it had the same string.
    """

    endpoint: str
    index: int


def _place(endpoint: str, index: int = 0) -> object:
    """
    Where an endpoint listens, for matching: equal for two endpoints that
    would take the same socket.

    @param index: how many endpoints with the same string came before it,
        which tells apart endpoints that have no place of their own.
    """
    key = _listening_key(endpoint)
    return _Unplaced(endpoint, index) if key is None else key


def _by_place(listeners: tuple[Listener, ...]) -> dict[object, Listener]:
    """
    Index listeners by their place, in order.
    """
    seen: Counter[str] = Counter()
    places: dict[object, Listener] = {}
    for listener in listeners:
        places[_place(listener.endpoint, seen[listener.endpoint])] = listener
        seen[listener.endpoint] += 1
    return places


def _comparable(value: object) -> object:
    """
    A value that compares as C{attrs} equality would, except that each
    L{config.Pool} inside it stands for its name.
    """
    if isinstance(value, config.Pool):
        return _PoolName(value.name)
    if isinstance(value, tuple):
        return tuple(_comparable(item) for item in value)
    kind = type(value)
    if has(kind):
        return (kind, *(_comparable(getattr(value, each.name)) for each in fields(kind) if each.eq))
    return value


def _changed_fields(
    old: object, new: object, ignored: frozenset[str] = frozenset()
) -> tuple[str, ...]:
    """
    The names of the compared fields of two values of one C{attrs} class
    that differ, pools compared by name, in field order.

    @param ignored: fields left out: those the values were matched by, or
        that are compared apart.
    """
    kind = type(new)
    assert has(kind) and type(old) is kind
    return tuple(
        each.name
        for each in fields(kind)
        if each.eq
        and each.name not in ignored
        and _comparable(getattr(old, each.name)) != _comparable(getattr(new, each.name))
    )


def _pool_change(old: config.Pool, new: config.Pool) -> PoolChange:
    """
    Compare two pools of one name: servers by address, then the other fields.
    """
    old_servers = {server.address: server for server in old.servers}
    new_addresses = {server.address for server in new.servers}
    changed = []
    for server in new.servers:
        before = old_servers.get(server.address)
        if before is not None and before != server:
            changed.append(ServerChange(before, server, _changed_fields(before, server)))
    return PoolChange(
        old=old,
        new=new,
        servers_added=tuple(server for server in new.servers if server.address not in old_servers),
        servers_changed=tuple(changed),
        servers_removed=tuple(address for address in old_servers if address not in new_addresses),
        settings_changed=_changed_fields(old, new, frozenset({"name", "servers"})),
    )


def _admin_change(old: config.Admin | None, new: config.Admin | None) -> AdminChange | None:
    """
    How the admin endpoint changed, or L{None} when it did not.
    """
    if old is None and new is None:
        return None
    if old is None or new is None:
        return AdminChange(old, new)
    changed = _changed_fields(old, new)
    return AdminChange(old, new, changed) if changed else None


def _unmatched(
    old: tuple[IServiceFactory, ...], new: tuple[IServiceFactory, ...]
) -> tuple[tuple[IServiceFactory, ...], tuple[IServiceFactory, ...]]:
    """
    Match two lists of service factories by equality, each item at most once.

    Equality, not hashing: a provider need not be hashable.

    @return: the old items no new one matched, and the new items no old one did.
    """
    unmatched_old = list(old)
    added = []
    for service in new:
        for index, before in enumerate(unmatched_old):
            if before == service:
                del unmatched_old[index]
                break
        else:
            added.append(service)
    return tuple(unmatched_old), tuple(added)


def _kind(listener: Listener) -> str:
    """
    C{HTTP} or C{TCP}, for log lines.
    """
    return "HTTP" if isinstance(listener, config.HTTPListener) else "TCP"


def _count(number: int, noun: str) -> str:
    """
    C{"1 server"}, C{"3 servers"}.
    """
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _describe_pool(change: PoolChange) -> list[str]:
    """
    The log lines of a kept pool's changes, in the order to apply them.
    """
    prefix = f"pool {change.name}:"
    lines = [f"{prefix} server {server.address} added" for server in change.servers_added]
    for server in change.servers_changed:
        how = "in place" if server.in_place else "replaced: the old one drains"
        changed = ", ".join(server.changed)
        lines.append(f"{prefix} server {server.address}: {changed} changed ({how})")
    if change.settings_changed:
        lines.append(f"{prefix} {', '.join(change.settings_changed)} changed")
    lines.extend(
        f"{prefix} server {address} removed (drains)" for address in change.servers_removed
    )
    return lines


def _describe_admin(change: AdminChange) -> str:
    """
    The log line of an admin endpoint change.
    """
    if change.old is None:
        assert change.new is not None
        return f"admin {change.new.endpoint} added"
    if change.new is None:
        return f"admin {change.old.endpoint} removed"
    if change.moved:
        return f"admin moved from {change.old.endpoint} to {change.new.endpoint}"
    return f"admin {change.new.endpoint}: {', '.join(change.changed)} changed (kept its socket)"
