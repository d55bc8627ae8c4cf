# -*- test-case-name: tests.test_pool -*-
"""
The runtime state of pools and their servers: who is up, who is busy, who failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
)
from zope.interface import implementer

from txproxy.interfaces import IBalancer, IPoolObserver, IServerView, PickContext

WEIGHT_SCALE = 100
"""
The units of L{ServerState.weight} in one unit of configured weight.

Balancers only compare weights with each other, so scaling every weight
alike changes no pick; the scale lets slow start give a server of weight 1 a
tenth of its share in integer arithmetic, as HAProxy's C{BE_WEIGHT_SCALE}
does.
"""

SLOW_START_SHARE = 0.1
"""
The share of its weight a server starts with when it comes up in a pool with
slow start.
"""

_RAMP_STEPS = 10  # weight updates over one slow start: one timer call each


class ServerStatus(enum.Enum):
    """
    Whether a server may be given new work.

    UP servers take new work; DOWN servers failed their health checks;
    DRAINING servers finish what they have but take nothing new; DISABLED
    servers were turned off by an operator, as HAProxy's maintenance mode
    does: health checks never bring them back, only L{Pool.enable}.
    """

    UP = "up"
    DOWN = "down"
    DRAINING = "draining"
    DISABLED = "disabled"


@frozen
class CheckResult:
    """
    The outcome of one active health check of one server, kept for the admin API.

    @ivar time: when the check started, by the checker's clock (seconds
        since the epoch on a real reactor).
    @ivar ok: whether it passed.
    @ivar reason: what passed (C{"status 200"}) or why it failed
        (C{"connection refused"}).
    @ivar duration: the seconds it took.
    """

    time: float
    ok: bool
    reason: str
    duration: float


@implementer(IServerView)
@define(eq=False)
class ServerState:
    """
    One server of a pool as it is now, apart from its immutable configuration.

    Only L{Pool} changes its status, weight and counters; balancers and the
    admin pages read them. The health checker records C{last_check}.

    @ivar address: C{host:port}, unique within the pool.
    @ivar configured_weight: the weight of its configuration (at least 1);
        given to the constructor as C{weight}.
    @ivar weight: the effective weight balancers read:
        C{configured_weight * WEIGHT_SCALE}, less while slow start ramps it up.
    @ivar backup: whether the server only takes work while no primary is up.
    @ivar max_connections: the most connections it may have at once, or L{None}.
    @ivar tls: how to speak TLS to it, or L{None} for plain TCP.
    @ivar status: UP, DOWN, DRAINING or DISABLED.
    @ivar active: connections or requests now in flight.
    @ivar total: connections or requests ever given to it.
    @ivar fails: consecutive failures on real traffic since the last success.
    @ivar failures: failures on real traffic ever.
    @ivar healthy: the health checks' verdict: L{Pool.mark_down} clears it
        and L{Pool.mark_up} sets it, whatever the status; L{Pool.enable}
        brings a server back UP only while it is set.
    @ivar down_reason: why the health checks marked it down, while C{healthy}
        is clear; else L{None}.
    @ivar last_check: the result of its last active health check, or L{None}.
    """

    address: str
    configured_weight: int = field(default=1, alias="weight")
    backup: bool = False
    max_connections: int | None = None
    tls: IOpenSSLClientConnectionCreator | None = None
    status: ServerStatus = ServerStatus.UP
    active: int = 0
    total: int = 0
    fails: int = 0
    failures: int = 0
    weight: int = field(init=False)
    healthy: bool = field(init=False)
    down_reason: str | None = field(default=None, init=False)
    last_check: CheckResult | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self.weight = self.full_weight
        self.healthy = self.status is not ServerStatus.DOWN

    @property
    def full_weight(self) -> int:
        """
        The effective weight once any slow start is over.
        """
        return self.configured_weight * WEIGHT_SCALE

    @property
    def available(self) -> bool:
        """
        C{True} while the server is up and below its connection cap.
        """
        return self.status is ServerStatus.UP and (
            self.max_connections is None or self.active < self.max_connections
        )

    @property
    def host(self) -> str:
        """
        The host part of the address, without the brackets of an IPv6 literal.
        """
        return self.address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """
        The port part of the address.
        """
        return int(self.address.rpartition(":")[2])


@define(eq=False)
class Lease:
    """
    One server lent to one connection or request, counted in its C{active}.

    Release it exactly once, when the work ends, saying whether it failed;
    later releases are ignored, so error paths may release defensively.
    """

    pool: Pool
    server: ServerState
    _released: bool = field(default=False, init=False)

    def release(self, failed: bool = False, status: int | None = None) -> None:
        """
        Give the server back to the pool.

        @param failed: C{True} when the server could not be reached, broke
            the connection or timed out: the failure is counted against it.
        @param status: the status of the server's HTTP response, if any, so
            that passive health checks may count 5xx responses as failures.
        """
        if self._released:
            return
        self._released = True
        self.pool._release(self.server, failed, status)


class NoSuchServer(KeyError):
    """
    A pool was asked about an address that is not one of its servers.
    """


@frozen
class DuplicateServer(ValueError):
    """
    A server was added to a pool that already has a server at its address
    (perhaps one still draining after L{Pool.remove}).

    @ivar pool: the pool's name.
    @ivar address: the address.
    """

    pool: str
    address: str

    def __str__(self) -> str:
        return f"pool {self.pool} already has a server {self.address}"


@frozen
class Unavailable(Exception):
    """
    No server of a pool may take the work, and waiting would not help: no
    server that is up could free a slot for it. The caller answers 503.

    @ivar pool: the pool's name.
    """

    pool: str

    def __str__(self) -> str:
        return f"no server of pool {self.pool} is available"


@frozen
class QueueFull(Unavailable):
    """
    Every server a request may use is at its connection cap and the pool's
    queue is full (or the pool has none). The caller answers 503.

    @ivar size: the queue's size.
    """

    size: int

    def __str__(self) -> str:
        if not self.size:
            return f"every server of pool {self.pool} is busy, and the pool has no queue"
        return f"the queue of pool {self.pool} is full ({self.size} waiting)"


@frozen
class QueueTimeout(Unavailable):
    """
    A request waited its time in a pool's queue and no server freed up for
    it. The caller answers 503.

    @ivar timeout: the seconds it waited.
    """

    timeout: float

    def __str__(self) -> str:
        return f"no server of pool {self.pool} freed up in {self.timeout:g}s"


@define(eq=False)
class _Waiter:
    """
    A request waiting in a pool's queue.

    @ivar context: what its balancer may know of it.
    @ivar deferred: fires with its lease.
    @ivar timer: fails it with L{QueueTimeout}.
    """

    context: PickContext
    deferred: Deferred[Lease] = field(init=False)
    timer: IDelayedCall = field(init=False)


class Pool:
    """
    A named group of servers with one balancer.

    The pool picks the tier (primaries while one is up, else the backups),
    asks its balancer for a server, and keeps the per-server counters. Its
    servers change at run time: health checks mark them up and down,
    operators drain, disable, enable, add and remove them.

    Servers with a connection cap may have requests wait for them in a
    bounded first-come queue (L{wait}); a server that comes up, is added or
    is enabled with C{slow_start} set has its weight ramped up over that many
    seconds, from L{SLOW_START_SHARE} of it.

    @ivar name: the pool's name.
    @ivar balancer: the balancer picking among the servers of a tier.
    @ivar queue_size: how many requests may wait for a server; 0 for none.
    @ivar queue_timeout: the seconds a request waits by default.
    @ivar slow_start: the seconds over which a server's weight ramps up; 0
        for none.
    """

    def __init__(
        self,
        name: str,
        servers: Iterable[ServerState],
        balancer: IBalancer,
        *,
        queue_size: int = 0,
        queue_timeout: float = 10.0,
        slow_start: float = 0.0,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param clock: times waits in the queue and slow start; needed when
            C{queue_size} or C{slow_start} is set.
        @raise DuplicateServer: when two servers have the same address.
        @raise ValueError: for a queue or slow start without a clock.
        """
        if (queue_size or slow_start) and clock is None:
            raise ValueError("a pool with a queue or slow start needs a clock")
        self.name = name
        self.balancer = balancer
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.slow_start = slow_start
        self._clock = clock
        self._servers: list[ServerState] = []
        self._primaries: list[ServerState] = []
        self._backups: list[ServerState] = []
        for server in servers:
            self._join(server)
        self._observers: tuple[IPoolObserver, ...] = ()
        # An insertion-ordered set: first come, first served; O(1) to leave.
        self._waiters: dict[_Waiter, None] = {}
        # Servers being removed: the Deferreds fired once they are idle.
        self._leaving: dict[str, list[Deferred[None]]] = {}
        # Servers whose weight slow start is ramping up: when each began.
        self._ramping: dict[ServerState, float] = {}
        self._ramp_call: IDelayedCall | None = None

    @property
    def servers(self) -> Sequence[ServerState]:
        """
        Every server of the pool, in configuration order, then added ones.
        """
        return tuple(self._servers)

    @property
    def queued(self) -> int:
        """
        How many requests wait in the queue now.
        """
        return len(self._waiters)

    def server(self, address: str) -> ServerState:
        """
        Find a server by its address.

        @raise NoSuchServer: when no server of this pool has that address.
        """
        for server in self._servers:
            if server.address == address:
                return server
        raise NoSuchServer(address)

    def add_observer(self, observer: IPoolObserver) -> None:
        """
        Tell C{observer} of every lease released and every server added or
        removed from now on.
        """
        self._observers += (observer,)

    def remove_observer(self, observer: IPoolObserver) -> None:
        """
        Stop telling C{observer}; one it was not told of is ignored.
        """
        self._observers = tuple(each for each in self._observers if each is not observer)

    # Leases: the hot path.

    def lease(self, context: PickContext) -> Lease | None:
        """
        Lend a server to one connection or request.

        @return: the lease, or L{None} when no server may take the work now
            (then L{wait} may queue it).
        """
        tier = self._tier(context.exclude)
        if not tier:
            return None
        picked = self.balancer.pick(tier, context)
        if picked is None:
            return None
        server = picked if isinstance(picked, ServerState) else self.server(picked.address)
        server.active += 1
        server.total += 1
        return Lease(self, server)

    def _tier(self, exclude: frozenset[str]) -> list[ServerState]:
        """
        The primaries while one of them is up and not excluded, else the backups.
        """
        for server in self._primaries:
            if server.status is ServerStatus.UP and server.address not in exclude:
                return self._primaries
        return self._backups

    def _release(self, server: ServerState, failed: bool, status: int | None) -> None:
        """
        Count the end of a lease, tell the observers, then hand the freed
        slot to a waiting request or finish removing a drained server. With
        no observer, no queue and no removal it costs a few attribute reads.
        """
        server.active -= 1
        if failed:
            server.fails += 1
            server.failures += 1
        else:
            server.fails = 0
        for observer in self._observers:
            observer.server_released(server, failed, status)
        if self._waiters and server.available:
            self._hand_over(server)
        elif server.status is ServerStatus.DRAINING and not server.active:
            if server.address in self._leaving:
                self._take_out(server)

    # The queue.

    def wait(self, context: PickContext, timeout: float | None = None) -> Deferred[Lease]:
        """
        Lend a server to one connection or request, waiting in the pool's
        queue for one to free a slot if need be.

        A request waits only while a server it may use is up but at its
        connection cap: each release on such a server hands the slot to the
        oldest waiting request that may use it.

        @param timeout: the most seconds to wait; the pool's C{queue_timeout}
            if L{None}.
        @return: fires with the lease, at once if a server is free; fails at
            once with L{Unavailable} when no server it may use is up, with
            L{QueueFull} when C{queue_size} requests already wait, or after
            C{timeout} with L{QueueTimeout}. Cancelling it leaves the queue.
        """
        lease = self.lease(context)
        if lease is not None:
            return succeed(lease)
        if not self._may_free(context.exclude):
            return fail(Unavailable(self.name))
        if len(self._waiters) >= self.queue_size:
            return fail(QueueFull(self.name, self.queue_size))
        assert self._clock is not None
        waiter = _Waiter(context)
        waiter.deferred = Deferred(lambda _: self._leave(waiter))
        delay = self.queue_timeout if timeout is None else timeout
        waiter.timer = self._clock.callLater(delay, self._time_out, waiter, delay)
        self._waiters[waiter] = None
        return waiter.deferred

    def _may_free(self, exclude: frozenset[str]) -> bool:
        """
        Whether a server the request may use is up, so that it may free a slot.
        """
        return any(
            server.status is ServerStatus.UP and server.address not in exclude
            for server in self._tier(exclude)
        )

    def _hand_over(self, server: ServerState) -> None:
        """
        Give the slot C{server} just freed to the oldest request waiting that
        may use it; the queue being non-empty, no other server is free for it.
        """
        chosen = None
        for waiter in self._waiters:
            exclude = waiter.context.exclude
            if server.address not in exclude and server in self._tier(exclude):
                chosen = waiter
                break
        if chosen is not None:
            self._grant(chosen, self._lend(server))

    def _serve_waiters(self) -> None:
        """
        Give each waiting request, oldest first, a lease if a server is free
        for it: a server came up or joined.
        """
        for waiter in list(self._waiters):
            if waiter in self._waiters:
                lease = self.lease(waiter.context)
                if lease is not None:
                    self._grant(waiter, lease)

    def _lend(self, server: ServerState) -> Lease:
        """
        Lend C{server}, chosen already.
        """
        server.active += 1
        server.total += 1
        return Lease(self, server)

    def _grant(self, waiter: _Waiter, lease: Lease) -> None:
        """
        Take a request out of the queue and give it its lease.
        """
        del self._waiters[waiter]
        waiter.timer.cancel()
        waiter.deferred.callback(lease)

    def _leave(self, waiter: _Waiter) -> None:
        """
        A waiting request was cancelled: it leaves the queue.
        """
        if waiter in self._waiters:
            del self._waiters[waiter]
            waiter.timer.cancel()

    def _time_out(self, waiter: _Waiter, timeout: float) -> None:
        """
        A request waited C{timeout} seconds: it leaves the queue, failed.
        """
        del self._waiters[waiter]
        waiter.deferred.errback(QueueTimeout(self.name, timeout))

    # Health: how checks change the servers.

    def mark_up(self, address: str) -> None:
        """
        Note that a server passes its health checks: a DOWN server takes new
        work again. A DRAINING or DISABLED server stays so: health checks
        never undo what an operator did.
        """
        server = self.server(address)
        server.healthy = True
        server.down_reason = None
        if server.status is ServerStatus.DOWN:
            self._bring_up(server)

    def mark_down(self, address: str, reason: str | None = None) -> None:
        """
        Note that a server fails its health checks: an UP server takes no
        new work until L{mark_up}.

        @param reason: why, for the admin API.
        """
        server = self.server(address)
        server.healthy = False
        server.down_reason = reason
        if server.status is ServerStatus.UP:
            server.status = ServerStatus.DOWN

    # Operators: how people and reloads change the servers.

    def drain(self, address: str) -> None:
        """
        Let a server finish its work in flight but give it nothing new, until
        L{enable}.
        """
        self.server(address).status = ServerStatus.DRAINING

    def disable(self, address: str) -> None:
        """
        Turn a server off, as HAProxy's maintenance mode: it takes no new
        work, work in flight goes on, and health checks never bring it back;
        only L{enable} does. A server being removed stays DRAINING.
        """
        server = self.server(address)
        if address not in self._leaving:
            server.status = ServerStatus.DISABLED

    def enable(self, address: str) -> None:
        """
        Undo L{drain} or L{disable}: the server is UP again if its health
        checks pass, else DOWN until they do. A server being removed stays
        DRAINING.
        """
        server = self.server(address)
        if address in self._leaving:
            return
        if server.status in (ServerStatus.DRAINING, ServerStatus.DISABLED):
            if server.healthy:
                self._bring_up(server)
            else:
                server.status = ServerStatus.DOWN

    def add(self, server: ServerState) -> None:
        """
        Add a server to the pool, after those it has: it takes work at once
        if UP (ramping up its weight with slow start), and health checks
        start on it.

        @raise DuplicateServer: when the pool has a server at its address.
        """
        self._join(server)
        if server.status is ServerStatus.UP:
            self._start_ramp(server)
        for observer in self._observers:
            observer.server_added(server)
        if self._waiters:
            self._serve_waiters()

    def removing(self, address: str) -> bool:
        """
        Whether a server is draining on its way out of the pool.
        """
        return address in self._leaving

    def remove(self, address: str) -> Deferred[None]:
        """
        Drain a server, then take it out of the pool once its last lease is
        released. Live work is never cut.

        @return: fires once the server is out: at once if it is idle.
            Cancelling it stops the wait, not the removal.
        @raise NoSuchServer: when the pool has no server at C{address}.
        """
        server = self.server(address)
        server.status = ServerStatus.DRAINING
        if not server.active:
            self._take_out(server)
            return succeed(None)
        removals = self._leaving.setdefault(address, [])
        removed: Deferred[None] = Deferred(lambda removal: removals.remove(removal))
        removals.append(removed)
        return removed

    def update(
        self, address: str, *, weight: int, backup: bool, max_connections: int | None
    ) -> None:
        """
        Give a server new settings in place, keeping its connections,
        counters and health: what a reload does for the settings
        C{txproxy.reload.SERVER_FIELDS_IN_PLACE} names.

        A server in slow start ramps on towards its new weight; a higher
        connection cap lets waiting requests use it at once.
        """
        server = self.server(address)
        server.configured_weight = weight
        if server not in self._ramping:
            server.weight = server.full_weight
        if backup != server.backup:
            server.backup = backup
            self._primaries = [each for each in self._servers if not each.backup]
            self._backups = [each for each in self._servers if each.backup]
        server.max_connections = max_connections
        if self._waiters:
            self._serve_waiters()

    def configure(
        self,
        *,
        balancer: IBalancer,
        queue_size: int,
        queue_timeout: float,
        slow_start: float,
    ) -> None:
        """
        Take new settings in place, keeping the servers, their counters and
        the requests waiting: what a reload does for a pool's settings.

        A new balancer starts its own bookkeeping from the next lease. A
        smaller queue turns no waiting request away, and a new
        C{queue_timeout} counts for requests queued from now on. Servers in
        slow start ramp on over the new C{slow_start}, or take their full
        weight at once when it is 0.

        @raise ValueError: for a queue or slow start on a pool made without
            a clock.
        """
        if (queue_size or slow_start) and self._clock is None:
            raise ValueError("a pool with a queue or slow start needs a clock")
        self.balancer = balancer
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.slow_start = slow_start
        if not slow_start:
            for server in self._ramping:
                server.weight = server.full_weight
            self._ramping.clear()
            if self._ramp_call is not None:
                self._ramp_call.cancel()
                self._ramp_call = None

    def _join(self, server: ServerState) -> None:
        """
        Put a server in the pool and its tier.

        @raise DuplicateServer: when the pool has a server at its address.
        """
        if any(other.address == server.address for other in self._servers):
            raise DuplicateServer(self.name, server.address)
        self._servers.append(server)
        (self._backups if server.backup else self._primaries).append(server)

    def _take_out(self, server: ServerState) -> None:
        """
        Take an idle server out of the pool, and say so.
        """
        self._servers.remove(server)
        (self._backups if server.backup else self._primaries).remove(server)
        self._ramping.pop(server, None)
        removals = self._leaving.pop(server.address, [])
        for observer in self._observers:
            observer.server_removed(server)
        for removed in removals:
            removed.callback(None)

    def _bring_up(self, server: ServerState) -> None:
        """
        Make a server UP: its weight ramps up, and waiting requests may use it.
        """
        server.status = ServerStatus.UP
        self._start_ramp(server)
        if self._waiters:
            self._serve_waiters()

    # Slow start: a timer steps the weights of servers coming up, so that a
    # lease reads a plain integer and does no arithmetic on the clock.

    def _start_ramp(self, server: ServerState) -> None:
        """
        Start ramping up the weight of a server that came up or joined.
        """
        if not self.slow_start:
            return
        assert self._clock is not None
        self._ramping[server] = self._clock.seconds()
        server.weight = _ramped(server.full_weight, 0.0)
        if self._ramp_call is None:
            self._ramp_call = self._clock.callLater(self.slow_start / _RAMP_STEPS, self._ramp)

    def _ramp(self) -> None:
        """
        Step up the weight of each server in slow start, ending its ramp at
        its full weight or when it stops being UP.
        """
        assert self._clock is not None
        self._ramp_call = None
        now = self._clock.seconds()
        for server, since in list(self._ramping.items()):
            # Timer steps add up to the slow start less a rounding error.
            progress = (now - since) / self.slow_start + 1e-9
            if progress >= 1.0 or server.status is not ServerStatus.UP:
                server.weight = server.full_weight
                del self._ramping[server]
            else:
                server.weight = _ramped(server.full_weight, progress)
        if self._ramping:
            self._ramp_call = self._clock.callLater(self.slow_start / _RAMP_STEPS, self._ramp)


def _ramped(full_weight: int, progress: float) -> int:
    """
    The weight of a server C{progress} (0 to 1) of the way through its slow
    start: from L{SLOW_START_SHARE} of its full weight, linearly, to all of it.
    """
    share = SLOW_START_SHARE + (1.0 - SLOW_START_SHARE) * progress
    return max(1, round(full_weight * share))
