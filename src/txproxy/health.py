# -*- test-case-name: tests.test_health -*-
"""
Active and passive health checking: rise/fall counting, outlier ejection.

The verdicts are pure values (L{HealthCounter}, L{Backoff}) and a small
state keeper (L{OutlierDetector}); the probes (L{txproxy.probes.TCPConnectCheck},
L{txproxy.probes.HTTPCheck}) are thin protocols; L{HealthChecker} runs both kinds of check
for one pool on a reactor given to it, and is the only part that changes the
pool, through L{Pool.mark_up} and L{Pool.mark_down}. L{HealthService} runs a
configuration's checkers with the rest of txproxy.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable, Mapping

from attrs import define, evolve, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy.config import HealthCheck, PassiveCheck
from txproxy.config import Pool as PoolSettings
from txproxy.interfaces import IPoolObserver, IProxyReactor, IServerView
from txproxy.pool import CheckResult, Pool, ServerState, ServerStatus
from txproxy.probes import IHealthCheck, check_for, failure_reason


class Transition(enum.Enum):
    """
    What one probe did to a server's verdict (Envoy's C{HealthTransition}).
    """

    UNCHANGED = "unchanged"  # the probe agreed with the verdict
    PENDING = "pending"  # it disagreed, but not enough probes in a row yet
    CHANGED = "changed"  # enough probes in a row disagreed: the verdict flipped


@frozen
class HealthCounter:
    """
    The rise/fall verdict of a server's active checks, as a value.

    A healthy server turns unhealthy after C{fall} failed probes in a row; an
    unhealthy one turns healthy after C{rise} passed probes in a row. A probe
    that agrees with the verdict wipes out a streak of ones that did not, so
    one stray result never flips a server.

    @ivar rise: passed probes in a row that make an unhealthy server healthy.
    @ivar fall: failed probes in a row that make a healthy server unhealthy.
    @ivar healthy: the verdict.
    @ivar streak: probes in a row, lately, that disagreed with the verdict.
    """

    rise: int
    fall: int
    healthy: bool = True
    streak: int = 0

    def record(self, passed: bool) -> tuple[HealthCounter, Transition]:
        """
        Count one probe.

        @return: the counter after it, and what it did to the verdict.
        """
        if passed is self.healthy:
            return (evolve(self, streak=0) if self.streak else self), Transition.UNCHANGED
        streak = self.streak + 1
        if streak >= (self.rise if passed else self.fall):
            return evolve(self, healthy=passed, streak=0), Transition.CHANGED
        return evolve(self, streak=streak), Transition.PENDING


@frozen
class Backoff:
    """
    How long a server's ejections last: C{base} the first time, twice as
    long each time after, never longer than C{maximum}.

    @ivar base: the seconds of a first ejection.
    @ivar maximum: the seconds of the longest ejection.
    @ivar ejections: ejections so far (counting stops once at C{maximum}).
    """

    base: float
    maximum: float
    ejections: int = 0

    @property
    def delay(self) -> float:
        """
        The seconds of the latest ejection; 0 before the first.
        """
        if not self.ejections:
            return 0.0
        return min(self.base * 2.0 ** (self.ejections - 1), self.maximum)

    def grown(self) -> Backoff:
        """
        The back-off after one more ejection.
        """
        if self.delay >= self.maximum:
            return self
        return evolve(self, ejections=self.ejections + 1)


@define
class OutlierDetector:
    """
    Passive health checking: counts each server's failures in a row on real
    traffic and decides its ejections, as Envoy's outlier detection does.

    It keeps state but touches neither pool nor reactor: L{HealthChecker}
    gives it outcomes, the time and the state of the pool, and carries out
    what it decides.

    @ivar settings: the pool's passive check.
    @ivar _streaks: failures in a row, by address; successes remove entries.
    @ivar _backoffs: each server's ejection back-off, by address.
    @ivar _ejected: the addresses ejected now.
    @ivar _returned: when each server last came back from an ejection.
    """

    settings: PassiveCheck
    _streaks: dict[str, int] = field(factory=dict, init=False)
    _backoffs: dict[str, Backoff] = field(factory=dict, init=False)
    _ejected: set[str] = field(factory=set, init=False)
    _returned: dict[str, float] = field(factory=dict, init=False)

    def record(self, address: str, failed: bool) -> bool:
        """
        Count how one lease on a server ended.

        @return: whether the server, not ejected, has now failed
            C{consecutive_failures} times in a row: the caller then sees
            whether L{may_eject} allows an ejection.
        """
        if not failed:
            if self._streaks:
                self._streaks.pop(address, None)
            return False
        streak = self._streaks.get(address, 0) + 1
        self._streaks[address] = streak
        return streak >= self.settings.consecutive_failures and address not in self._ejected

    def may_eject(self, servers: int, others_up: int) -> bool:
        """
        Whether one more server may be ejected from a pool.

        @param servers: how many servers the pool has.
        @param others_up: how many of its other servers are up.
        @return: C{False} when the server is the last one up, or one more
            ejection would pass C{max_ejection_percent} of the pool.
        """
        if others_up < 1:
            return False
        return (len(self._ejected) + 1) * 100 <= self.settings.max_ejection_percent * servers

    def eject(self, address: str, now: float) -> float:
        """
        Eject a server.

        @return: the seconds its ejection lasts.
        """
        settings = self.settings
        backoff = self._backoffs.get(address)
        returned = self._returned.get(address)
        if backoff is None or returned is not None and now - returned >= settings.max_ejection:
            backoff = Backoff(settings.base_ejection, settings.max_ejection)
        backoff = backoff.grown()
        self._backoffs[address] = backoff
        self._ejected.add(address)
        self._streaks.pop(address, None)
        return backoff.delay

    def restore(self, address: str, now: float) -> None:
        """
        End a server's ejection.
        """
        self._ejected.discard(address)
        self._returned[address] = now

    def is_ejected(self, address: str) -> bool:
        """
        Whether a server is ejected now.
        """
        return address in self._ejected

    def streak(self, address: str) -> int:
        """
        A server's failures in a row.
        """
        return self._streaks.get(address, 0)

    def forget(self, address: str) -> None:
        """
        Drop what is known of a server that left the pool.
        """
        self._streaks.pop(address, None)
        self._backoffs.pop(address, None)
        self._ejected.discard(address)
        self._returned.pop(address, None)


def jittered(interval: float, jitter: float, draw: Callable[[], float]) -> float:
    """
    The seconds until a server's next probe: C{interval}, moved at random by
    up to C{jitter * interval} either way, so that the probes of many
    servers and pools drift apart rather than run in lock-step.

    @param draw: returns a float in [0, 1).
    """
    return interval * (1.0 + jitter * (2.0 * draw() - 1.0))


@define(eq=False)
class _Watch:
    """
    What a L{HealthChecker} knows of one server.

    @ivar server: the server.
    @ivar counter: its active checks' verdict, or L{None} without them.
    @ivar up: the verdict last given to the pool.
    @ivar active_reason: why its active checks last turned it down.
    @ivar ejection_reason: why it was last ejected.
    @ivar recovery: probes passed in a row since its ejection.
    @ivar next_probe: the call starting its next probe.
    @ivar probing: its probe in flight.
    @ivar ejection: the call ending its ejection.
    """

    server: ServerState
    counter: HealthCounter | None
    up: bool
    active_reason: str = ""
    ejection_reason: str = ""
    recovery: int = 0
    next_probe: IDelayedCall | None = None
    probing: Deferred[str] | None = None
    ejection: IDelayedCall | None = None

    def stop(self) -> None:
        """
        Cancel its timers and its probe in flight.
        """
        for call in (self.next_probe, self.ejection):
            if call is not None and call.active():
                call.cancel()
        self.next_probe = self.ejection = None
        probing, self.probing = self.probing, None
        if probing is not None:
            probing.cancel()


@implementer(IPoolObserver)
class HealthChecker:
    """
    Watches the servers of one pool and marks them up and down: actively,
    probing each server every C{interval} seconds (give or take its jitter),
    and passively, watching how real traffic to it ends.

    A server is up while its probes say so (or it has none) and it is not
    ejected. An ejected server comes back when its ejection is over, or
    sooner when C{rise} probes in a row pass. Each change is logged with the
    pool, the server and the reason. Only L{Pool.mark_up} and
    L{Pool.mark_down} are called: DISABLED and DRAINING servers stay so.

    Probes of one server never overlap: the next is scheduled when one ends.

    @ivar pool: the pool.
    """

    _log = Logger()

    def __init__(
        self,
        pool: Pool,
        clock: IReactorTime,
        *,
        health: HealthCheck | None = None,
        check: IHealthCheck | None = None,
        passive: PassiveCheck | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param clock: schedules probes and ends ejections.
        @param health: the active check's settings, or L{None} for none.
        @param check: probes servers; given if and only if C{health} is.
        @param passive: the passive check's settings, or L{None} for none.
        @param random: returns a float in [0, 1), to jitter the probes.
        @raise ValueError: for C{health} without C{check}, or the reverse.
        """
        if (health is None) != (check is None):
            raise ValueError("an active health check needs both its settings and its probe")
        self.pool = pool
        self._clock = clock
        self._health = health
        self._check = check
        self._detector = None if passive is None else OutlierDetector(passive)
        self._on_5xx = passive is not None and passive.on_5xx
        self._random = random
        self._watches: dict[str, _Watch] = {}
        self.running = False

    def start(self) -> None:
        """
        Start checking every server of the pool, and those added later.
        """
        if self.running:
            return
        self.running = True
        self.pool.add_observer(self)
        for server in self.pool.servers:
            self._watch(server)

    def stop(self) -> None:
        """
        Stop checking: cancel every probe and timer. Ejections end, since
        nothing would end them later; otherwise servers keep their state,
        for the checker of a reloaded configuration to take on.
        """
        if not self.running:
            return
        self.running = False
        self.pool.remove_observer(self)
        # Forget the watches first: their cancelled probes then find them gone.
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            watch.stop()
            if self._detector is not None and self._detector.is_ejected(watch.server.address):
                self._end_ejection(watch)
                if watch.counter is None or watch.counter.healthy:
                    self._bring_back(watch.server, "checks stopped during its ejection")

    def _watch(self, server: ServerState) -> None:
        """
        Start watching a server, taking on the verdict it has: a server
        marked down before needs C{rise} passed probes, or without active
        checks comes back at once, as nothing else could bring it back.
        """
        health = self._health
        counter = None
        if health is not None:
            counter = HealthCounter(health.rise, health.fall, healthy=server.healthy)
        elif not server.healthy:
            self._bring_back(server, "no active check holds it down")
        watch = _Watch(server, counter, up=server.healthy)
        watch.active_reason = server.down_reason or "not checked yet"
        self._watches[server.address] = watch
        if health is not None:
            # The first probes are spread over the jitter too.
            self._schedule(watch, health.jitter * health.interval * self._random())

    def _bring_back(self, server: ServerState, reason: str) -> None:
        """
        Mark a server up outside of any check, and say why.
        """
        self.pool.mark_up(server.address)
        self._log.info(
            "server {server} of pool {pool} is up: {reason}",
            pool=self.pool.name,
            server=server.address,
            reason=reason,
            check="none",
            status=server.status.value,
        )

    # Active checks

    def _schedule(self, watch: _Watch, delay: float) -> None:
        watch.next_probe = self._clock.callLater(delay, self._probe, watch)

    def _probe(self, watch: _Watch) -> None:
        assert self._check is not None
        watch.next_probe = None
        started = self._clock.seconds()
        probing = self._check.probe(watch.server)
        watch.probing = probing
        probing.addCallbacks(
            self._probed,
            self._probe_failed,
            callbackArgs=(watch, started),
            errbackArgs=(watch, started),
        )

    def _probed(self, passed: str, watch: _Watch, started: float) -> None:
        self._checked(watch, CheckResult(started, True, passed, self._clock.seconds() - started))

    def _probe_failed(self, reason: Failure, watch: _Watch, started: float) -> None:
        assert self._health is not None
        why = failure_reason(reason, self._health.timeout)
        self._checked(watch, CheckResult(started, False, why, self._clock.seconds() - started))

    def _checked(self, watch: _Watch, result: CheckResult) -> None:
        """
        Count a probe's result, give the pool the verdict, and schedule the
        next probe.
        """
        if self._watches.get(watch.server.address) is not watch:
            return  # Stopped, or the server left, while the probe was cancelled.
        health, counter = self._health, watch.counter
        assert health is not None and counter is not None
        watch.probing = None
        watch.server.last_check = result
        watch.counter, transition = counter.record(result.ok)
        if transition is Transition.CHANGED and not result.ok:
            watch.active_reason = f"{health.fall} checks failed: {result.reason}"
        detector = self._detector
        if detector is not None and detector.is_ejected(watch.server.address):
            watch.recovery = watch.recovery + 1 if result.ok else 0
            if watch.recovery >= health.rise:
                self._end_ejection(watch)
        self._apply(watch, "active", f"{health.rise} checks passed: {result.reason}")
        self._schedule(watch, jittered(health.interval, health.jitter, self._random))

    # Passive checks

    def server_released(self, server: IServerView, failed: bool, status: int | None) -> None:
        """
        See L{IPoolObserver.server_released}: count the outcome, and eject
        the server after too many failures in a row.
        """
        detector = self._detector
        if detector is None:
            return
        if self._on_5xx and status is not None and status >= 500:
            failed = True
        if detector.record(server.address, failed):
            self._consider_ejecting(server.address)

    def _consider_ejecting(self, address: str) -> None:
        detector, watch = self._detector, self._watches.get(address)
        assert detector is not None
        if watch is None or watch.server.status is not ServerStatus.UP:
            return  # Down, draining or disabled already: nothing to take out.
        servers = self.pool.servers
        others_up = sum(
            1 for other in servers if other is not watch.server and other.status is ServerStatus.UP
        )
        failures = detector.streak(address)
        if not detector.may_eject(len(servers), others_up):
            self._log.debug(
                "server {server} of pool {pool} not ejected after {failures} failures:"
                " too few servers would be left",
                pool=self.pool.name,
                server=address,
                failures=failures,
            )
            return
        duration = detector.eject(address, self._clock.seconds())
        watch.recovery = 0
        watch.ejection_reason = f"ejected for {duration:g}s after {failures} failures in a row"
        watch.ejection = self._clock.callLater(duration, self._ejection_over, watch, duration)
        self._apply(watch, "passive", "")

    def _ejection_over(self, watch: _Watch, duration: float) -> None:
        watch.ejection = None
        self._end_ejection(watch)
        self._apply(watch, "passive", f"ejection of {duration:g}s over")

    def _end_ejection(self, watch: _Watch) -> None:
        assert self._detector is not None
        if watch.ejection is not None:
            watch.ejection.cancel()
            watch.ejection = None
        self._detector.restore(watch.server.address, self._clock.seconds())

    # Both

    def _apply(self, watch: _Watch, check: str, passed: str) -> None:
        """
        Give the pool a server's verdict, and log it if it changed.

        A server is down while its active checks fail or it is ejected, for
        the reason of the first of those that holds.

        @param check: C{"active"} or C{"passive"}: which check just reported.
        @param passed: why the server is up, if it now is.
        """
        address = watch.server.address
        active_down = watch.counter is not None and not watch.counter.healthy
        ejected = self._detector is not None and self._detector.is_ejected(address)
        if not (active_down or ejected):
            if not watch.up:
                watch.up = True
                self.pool.mark_up(address)
                self._log.info(
                    "server {server} of pool {pool} is up: {reason}",
                    pool=self.pool.name,
                    server=address,
                    reason=passed,
                    check=check,
                    status=watch.server.status.value,
                )
            return
        reason = watch.active_reason if active_down else watch.ejection_reason
        if watch.up:
            watch.up = False
            self.pool.mark_down(address, reason)
            self._log.warn(
                "server {server} of pool {pool} is down: {reason}",
                pool=self.pool.name,
                server=address,
                reason=reason,
                check=check,
                status=watch.server.status.value,
            )
        elif watch.server.down_reason != reason:
            self.pool.mark_down(address, reason)

    def server_added(self, server: IServerView) -> None:
        """
        See L{IPoolObserver.server_added}: start checking it.
        """
        if self.running:
            self._watch(self.pool.server(server.address))

    def server_removed(self, server: IServerView) -> None:
        """
        See L{IPoolObserver.server_removed}: stop checking it.
        """
        watch = self._watches.pop(server.address, None)
        if watch is not None:
            watch.stop()
        if self._detector is not None:
            self._detector.forget(server.address)


class HealthService(Service):
    """
    Runs the health checks of a configuration while running: one
    L{HealthChecker} for each pool with an active or a passive check.

    A reload changes them pool by pool with L{replace} and L{remove}.

    @ivar checkers: the checkers, by pool name.
    """

    _log = Logger()

    def __init__(
        self,
        settings: Iterable[PoolSettings],
        pools: Mapping[str, Pool],
        reactor: IProxyReactor,
        random: Callable[[], float] = random.random,
    ) -> None:
        """
        @param settings: the configured pools.
        @param pools: their runtime pools, by name.
        @param reactor: connects to servers and times everything.
        @param random: returns a float in [0, 1), to jitter the probes.
        """
        self._reactor = reactor
        self._random = random
        self.checkers: dict[str, HealthChecker] = {}
        for pool in settings:
            checker = self._checker(pool, pools[pool.name])
            if checker is not None:
                self.checkers[pool.name] = checker

    def _checker(self, settings: PoolSettings, pool: Pool) -> HealthChecker | None:
        """
        The checker a pool's settings ask for, or L{None} when they ask for no check.
        """
        if settings.health is None and settings.passive is None:
            return None
        reactor = self._reactor
        check = None if settings.health is None else check_for(settings.health, reactor, reactor)
        return HealthChecker(
            pool,
            reactor,
            health=settings.health,
            check=check,
            passive=settings.passive,
            random=self._random,
        )

    def replace(self, settings: PoolSettings, pool: Pool) -> None:
        """
        Check a pool by new settings: its checker, if any, stops, and one for
        C{settings} starts (at once, while running), taking on each server's
        verdict as it stands.

        Settings with no check at all bring a server marked down back up at
        once, as nothing would bring it back later. A pool new to the
        service is added the same way.

        @param settings: the pool's new configuration.
        @param pool: its runtime pool.
        """
        self.remove(settings.name)
        checker = self._checker(settings, pool)
        if checker is None:
            for server in pool.servers:
                if not server.healthy:
                    pool.mark_up(server.address)
                    self._log.info(
                        "server {server} of pool {pool} is up: no health check holds it down",
                        pool=pool.name,
                        server=server.address,
                        check="none",
                        status=server.status.value,
                    )
            return
        self.checkers[settings.name] = checker
        if self.running:
            checker.start()

    def remove(self, name: str) -> None:
        """
        Stop checking a pool, if it is checked, and forget its checker: its
        servers keep their state.
        """
        checker = self.checkers.pop(name, None)
        if checker is not None:
            checker.stop()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        for checker in self.checkers.values():
            checker.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        for checker in self.checkers.values():
            checker.stop()
