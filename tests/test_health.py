"""
Tests for L{txproxy.health}: the verdicts as pure values, the checker's state
machine on a L{Clock}, the probes on a memory reactor and on real loopback
servers, and the service.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txproxy import config
from txproxy.balancing import RoundRobin
from txproxy.config import HealthCheck, PassiveCheck
from txproxy.health import (
    Backoff,
    HealthChecker,
    HealthCounter,
    HealthService,
    OutlierDetector,
    Transition,
    jittered,
)
from txproxy.interfaces import IPoolObserver, PickContext
from txproxy.pool import CheckResult, Pool, ServerState, ServerStatus
from txproxy.probes import HTTPCheck, IHealthCheck, ProbeFailed, TCPConnectCheck, check_for

ADDRESSES = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")


def make_pool(count: int = 3) -> Pool:
    """
    A pool of C{count} servers, C{10.0.0.1:80} and on.
    """
    return Pool("api", [ServerState(address) for address in ADDRESSES[:count]], RoundRobin())


def release_on(pool: Pool, address: str, failed: bool = False, status: int | None = None) -> None:
    """
    Lease the server at C{address} of C{pool} and release it as told.
    """
    others = frozenset(server.address for server in pool.servers) - {address}
    lease = pool.lease(PickContext(exclude=others))
    assert lease is not None and lease.server.address == address
    lease.release(failed=failed, status=status)


@contextmanager
def health_logs() -> Iterator[list[dict[str, object]]]:
    """
    Capture the up and down lines a checker logs, as their fields.
    """
    with capturedLogs() as events:
        found: list[dict[str, object]] = []
        yield found
    found.extend(
        {key: event.get(key) for key in ("pool", "server", "reason", "check")}
        | {"up": "is up" in event["log_format"]}
        for event in events
        if event.get("log_namespace") == "txproxy.health.HealthChecker"
        and event.get("log_level").name != "debug"
    )


@implementer(IHealthCheck)
class ScriptedCheck:
    """
    A check whose probes pass or fail as the test says, by server.

    @ivar passing: whether each server's probes pass (by default, yes).
    @ivar probes: the time and address of each probe started.
    @ivar hold: whether probes wait in C{pending} for the test to end them.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.passing: dict[str, bool] = {}
        self.probes: list[tuple[float, str]] = []
        self.hold = False
        self.pending: dict[str, Deferred[str]] = {}

    def probe(self, server: ServerState) -> Deferred[str]:
        self.probes.append((self.clock.seconds(), server.address))
        if self.hold:
            self.pending[server.address] = Deferred()
            return self.pending[server.address]
        if self.passing.get(server.address, True):
            return succeed("status 200")
        return fail(ProbeFailed("status 500 not in 200-399"))

    def probed(self, address: str) -> int:
        """
        How many probes the server had.
        """
        return sum(1 for _, each in self.probes if each == address)


class HealthCounterTests(SynchronousTestCase):
    """
    Tests for L{HealthCounter}: rise and fall as a pure value.
    """

    def record(self, counter: HealthCounter, *results: bool) -> tuple[HealthCounter, Transition]:
        """
        Record each result in turn and return the last counter and transition.
        """
        transition = Transition.UNCHANGED
        for passed in results:
            counter, transition = counter.record(passed)
        return counter, transition

    def test_fall(self) -> None:
        """
        A healthy server stays so until C{fall} failures in a row.
        """
        counter = HealthCounter(rise=2, fall=3)
        pending, transition = self.record(counter, False, False)
        self.assertEqual(
            (pending.healthy, pending.streak, transition), (True, 2, Transition.PENDING)
        )
        fallen, transition = pending.record(False)
        self.assertEqual(
            (fallen.healthy, fallen.streak, transition), (False, 0, Transition.CHANGED)
        )
        self.assertEqual(counter, HealthCounter(2, 3))

    def test_rise(self) -> None:
        """
        An unhealthy server becomes healthy after C{rise} passes in a row.
        """
        counter = HealthCounter(rise=2, fall=3, healthy=False)
        self.assertEqual(self.record(counter, True)[1], Transition.PENDING)
        risen, transition = self.record(counter, True, True)
        self.assertEqual((risen.healthy, transition), (True, Transition.CHANGED))

    def test_agreeing_result_resets_streak(self) -> None:
        """
        A result that agrees with the verdict wipes out a streak that did not.
        """
        counter, transition = self.record(HealthCounter(2, 3), False, False, True, False, False)
        self.assertEqual(
            (counter.healthy, counter.streak, transition), (True, 2, Transition.PENDING)
        )
        counter, transition = counter.record(True)
        self.assertEqual((counter.streak, transition), (0, Transition.UNCHANGED))


class BackoffTests(SynchronousTestCase):
    """
    Tests for L{Backoff}.
    """

    def test_doubles_up_to_maximum(self) -> None:
        """
        Ejections last C{base}, then twice as long each time, never longer
        than C{maximum}; counting stops there.
        """
        backoff = Backoff(30.0, 300.0)
        delays = []
        for _ in range(7):
            backoff = backoff.grown()
            delays.append(backoff.delay)
        self.assertEqual(delays, [30.0, 60.0, 120.0, 240.0, 300.0, 300.0, 300.0])
        self.assertEqual(backoff.ejections, 5)

    def test_no_delay_before_first(self) -> None:
        """
        Before any ejection the delay is 0.
        """
        self.assertEqual(Backoff(30.0, 300.0).delay, 0.0)


class OutlierDetectorTests(SynchronousTestCase):
    """
    Tests for L{OutlierDetector} as pure state.
    """

    def setUp(self) -> None:
        self.detector = OutlierDetector(
            PassiveCheck(consecutive_failures=3, base_ejection=10.0, max_ejection=40.0)
        )

    def test_consecutive_failures(self) -> None:
        """
        Only C{consecutive_failures} failures in a row call for an ejection;
        a success starts the count again.
        """
        detector = self.detector
        self.assertEqual([detector.record("a", True) for _ in range(2)], [False, False])
        self.assertFalse(detector.record("a", False))
        self.assertEqual([detector.record("a", True) for _ in range(3)], [False, False, True])
        self.assertFalse(detector.record("b", True))

    def test_max_ejection_percent(self) -> None:
        """
        At most C{max_ejection_percent} of the pool is ejected, and never the
        last server that is up.
        """
        detector = self.detector
        self.assertTrue(detector.may_eject(servers=4, others_up=3))
        detector.eject("a", 0.0)
        self.assertTrue(detector.may_eject(servers=4, others_up=2))
        detector.eject("b", 0.0)
        self.assertFalse(detector.may_eject(servers=4, others_up=1))
        self.assertFalse(detector.may_eject(servers=1, others_up=0))
        everything = OutlierDetector(PassiveCheck(max_ejection_percent=100))
        self.assertFalse(everything.may_eject(servers=2, others_up=0))

    def test_ejections_grow_and_are_forgiven(self) -> None:
        """
        Each ejection lasts longer than the one before, up to C{max_ejection};
        a server that stayed in C{max_ejection} seconds starts again at
        C{base_ejection}.
        """
        detector = self.detector
        durations = []
        now = 0.0
        for _ in range(4):
            durations.append(detector.eject("a", now))
            self.assertTrue(detector.is_ejected("a"))
            now += durations[-1]
            detector.restore("a", now)
            self.assertFalse(detector.is_ejected("a"))
        self.assertEqual(durations, [10.0, 20.0, 40.0, 40.0])
        self.assertEqual(detector.eject("a", now + 39.0), 40.0)
        detector.restore("a", now + 79.0)
        self.assertEqual(detector.eject("a", now + 119.0), 10.0)

    def test_forget(self) -> None:
        """
        A server forgotten is no longer ejected and starts afresh.
        """
        self.detector.eject("a", 0.0)
        self.detector.record("a", True)
        self.detector.forget("a")
        self.assertEqual((self.detector.is_ejected("a"), self.detector.streak("a")), (False, 0))
        self.assertEqual(self.detector.eject("a", 1.0), 10.0)


class JitterTests(SynchronousTestCase):
    """
    Tests for the spread of probes.
    """

    def test_bounds(self) -> None:
        """
        Probe intervals stay within C{jitter * interval} of C{interval} and
        spread over that range.
        """
        draw = random.Random(6).random
        delays = [jittered(10.0, 0.2, draw) for _ in range(10000)]
        self.assertTrue(all(8.0 <= delay <= 12.0 for delay in delays))
        self.assertLess(min(delays), 8.05)
        self.assertGreater(max(delays), 11.95)
        self.assertLess(abs(sum(delays) / len(delays) - 10.0), 0.05)
        self.assertEqual(jittered(10.0, 0.2, lambda: 0.0), 8.0)
        self.assertEqual(jittered(10.0, 0.0, draw), 10.0)

    def test_scheduled_probes_spread(self) -> None:
        """
        A checker's probes of a server come at jittered intervals, the first
        within the jitter of the start.
        """
        clock = Clock()
        check = ScriptedCheck(clock)
        checker = HealthChecker(
            make_pool(1),
            clock,
            health=HealthCheck(interval=10.0, jitter=0.2),
            check=check,
            random=random.Random(3).random,
        )
        checker.start()
        while len(check.probes) < 500:
            clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        times = [time for time, _ in check.probes]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        self.assertTrue(0.0 <= times[0] <= 2.0)
        self.assertTrue(all(8.0 <= gap <= 12.0 for gap in gaps))
        self.assertLess(min(gaps), 8.2)
        self.assertGreater(max(gaps), 11.8)
        checker.stop()


class ActiveCheckTests(SynchronousTestCase):
    """
    Tests for L{HealthChecker}'s active checks, on a L{Clock} with scripted probes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = make_pool()
        self.check = ScriptedCheck(self.clock)
        self.checker = HealthChecker(
            self.pool,
            self.clock,
            health=HealthCheck(interval=2.0, rise=2, fall=3, jitter=0.0),
            check=self.check,
        )
        self.checker.start()
        self.addCleanup(self.checker.stop)
        self.server = self.pool.server(ADDRESSES[0])

    def probe_rounds(self, rounds: int) -> None:
        """
        Let every server be probed C{rounds} more times.
        """
        for _ in range(rounds):
            self.clock.advance(0.0 if not self.check.probes else 2.0)

    def test_interfaces(self) -> None:
        """
        The checker observes its pool; the probes are L{IHealthCheck} providers.
        """
        verifyObject(IPoolObserver, self.checker)
        verifyObject(IHealthCheck, self.check)
        verifyObject(IHealthCheck, TCPConnectCheck(MemoryReactorClock(), Clock(), 1.0))
        verifyObject(IHealthCheck, HTTPCheck(MemoryReactorClock(), Clock(), HealthCheck(path="/")))

    def test_fall_takes_server_down(self) -> None:
        """
        A server goes DOWN after C{fall} failed probes in a row, not before;
        the change is logged with the pool, the server and the reason.
        """
        self.check.passing[self.server.address] = False
        with health_logs() as logs:
            self.probe_rounds(2)
            self.assertIs(self.server.status, ServerStatus.UP)
            self.probe_rounds(1)
        self.assertIs(self.server.status, ServerStatus.DOWN)
        reason = "3 checks failed: status 500 not in 200-399"
        self.assertEqual(self.server.down_reason, reason)
        self.assertEqual(
            logs,
            [
                {
                    "pool": "api",
                    "server": self.server.address,
                    "reason": reason,
                    "check": "active",
                    "up": False,
                }
            ],
        )

    def test_rise_brings_server_up(self) -> None:
        """
        A DOWN server comes back after C{rise} passed probes in a row.
        """
        self.check.passing[self.server.address] = False
        self.probe_rounds(3)
        self.check.passing[self.server.address] = True
        with health_logs() as logs:
            self.probe_rounds(1)
            self.assertIs(self.server.status, ServerStatus.DOWN)
            self.probe_rounds(1)
        self.assertIs(self.server.status, ServerStatus.UP)
        self.assertEqual(
            [(log["up"], log["reason"]) for log in logs], [(True, "2 checks passed: status 200")]
        )

    def test_last_check_kept(self) -> None:
        """
        Each server keeps its last check's time, result, reason and duration.
        """
        self.check.hold = True
        self.probe_rounds(1)
        self.clock.advance(0.25)
        self.check.pending[self.server.address].errback(ProbeFailed("connection refused"))
        self.assertEqual(
            self.server.last_check, CheckResult(0.0, False, "connection refused", 0.25)
        )
        self.check.pending[ADDRESSES[1]].callback("status 204")
        self.assertEqual(
            self.pool.server(ADDRESSES[1]).last_check, CheckResult(0.0, True, "status 204", 0.25)
        )

    def test_probes_never_overlap(self) -> None:
        """
        A server's next probe is scheduled only when its probe in flight ends.
        """
        self.check.hold = True
        self.probe_rounds(1)
        self.clock.advance(10.0)
        self.assertEqual(self.check.probed(self.server.address), 1)
        self.check.pending[self.server.address].callback("status 200")
        self.clock.advance(1.9)
        self.assertEqual(self.check.probed(self.server.address), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.check.probed(self.server.address), 2)

    def test_disabled_not_revived(self) -> None:
        """
        Checks never bring a DISABLED or DRAINING server back, though they
        keep its verdict; C{enable} then follows the verdict.
        """
        draining = self.pool.server(ADDRESSES[1])
        self.pool.disable(self.server.address)
        self.pool.drain(draining.address)
        self.check.passing[self.server.address] = False
        self.probe_rounds(3)
        self.assertEqual((self.server.status, self.server.healthy), (ServerStatus.DISABLED, False))
        self.check.passing[self.server.address] = True
        self.probe_rounds(2)
        self.assertEqual((self.server.status, self.server.healthy), (ServerStatus.DISABLED, True))
        self.assertIs(draining.status, ServerStatus.DRAINING)
        self.pool.enable(self.server.address)
        self.assertIs(self.server.status, ServerStatus.UP)

    def test_added_and_removed_servers(self) -> None:
        """
        A server added to the pool is checked from then on; one removed no longer.
        """
        self.probe_rounds(1)
        self.pool.add(ServerState("10.0.0.9:80"))
        self.clock.advance(0.0)
        self.assertEqual(self.check.probed("10.0.0.9:80"), 1)
        self.pool.remove("10.0.0.9:80")
        self.probe_rounds(3)
        self.assertEqual(self.check.probed("10.0.0.9:80"), 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)

    def test_stop_leaves_nothing(self) -> None:
        """
        Stopping cancels the probes in flight and every timer, and the pool
        is no longer observed; servers keep their state.
        """
        self.check.passing[self.server.address] = False
        self.probe_rounds(3)
        self.check.hold = True
        self.probe_rounds(1)
        pending = list(self.check.pending.values())
        self.checker.stop()
        self.assertTrue(all(probe.called for probe in pending))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIs(self.server.status, ServerStatus.DOWN)
        self.clock.advance(100.0)
        self.assertEqual(len(self.check.probes), 12)

    def test_takes_on_down_servers(self) -> None:
        """
        A new checker (after a reload) keeps a server that was down DOWN
        until C{rise} probes pass.
        """
        self.checker.stop()
        self.pool.mark_down(self.server.address, "3 checks failed: connection refused")
        checker = HealthChecker(
            self.pool,
            self.clock,
            health=HealthCheck(interval=2.0, rise=2, fall=3, jitter=0.0),
            check=self.check,
        )
        checker.start()
        self.addCleanup(checker.stop)
        self.clock.advance(0.0)
        self.assertIs(self.server.status, ServerStatus.DOWN)
        self.clock.advance(2.0)
        self.assertIs(self.server.status, ServerStatus.UP)

    def test_checks_need_probe(self) -> None:
        """
        Active settings without a probe, or the reverse, are refused.
        """
        self.assertRaises(ValueError, HealthChecker, self.pool, self.clock, health=HealthCheck())
        self.assertRaises(ValueError, HealthChecker, self.pool, self.clock, check=self.check)


class PassiveCheckTests(SynchronousTestCase):
    """
    Tests for L{HealthChecker}'s passive checks: real traffic ejects servers.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = make_pool(4)
        self.checker = self.make_checker(self.pool)
        self.server = self.pool.server(ADDRESSES[0])

    def make_checker(self, pool: Pool, **settings: object) -> HealthChecker:
        """
        Start a passive checker on C{pool}: ejections after 3 failures, of
        10 to 40 seconds, of at most half the pool by default.
        """
        passive = PassiveCheck(
            **{  # type: ignore[arg-type]
                "consecutive_failures": 3,
                "base_ejection": 10.0,
                "max_ejection": 40.0,
                **settings,
            }
        )
        checker = HealthChecker(pool, self.clock, passive=passive)
        checker.start()
        self.addCleanup(checker.stop)
        return checker

    def fail_server(self, address: str, times: int = 3, pool: Pool | None = None) -> None:
        """
        Fail C{times} leases in a row on a server.
        """
        for _ in range(times):
            release_on(pool or self.pool, address, failed=True)

    def ejection_left(self) -> float:
        """
        The seconds left of the one ejection under way.
        """
        [call] = self.clock.getDelayedCalls()
        return call.getTime() - self.clock.seconds()

    def test_consecutive_failures_eject(self) -> None:
        """
        A server failing C{consecutive_failures} leases in a row is ejected
        for C{base_ejection} seconds, then comes back; both are logged.
        """
        with health_logs() as logs:
            self.fail_server(self.server.address, 2)
            self.assertIs(self.server.status, ServerStatus.UP)
            self.fail_server(self.server.address, 1)
            self.assertIs(self.server.status, ServerStatus.DOWN)
            self.assertEqual(self.server.down_reason, "ejected for 10s after 3 failures in a row")
            self.clock.advance(9.9)
            self.assertIs(self.server.status, ServerStatus.DOWN)
            self.clock.advance(0.1)
        self.assertIs(self.server.status, ServerStatus.UP)
        self.assertEqual(
            [(log["up"], log["check"], log["reason"]) for log in logs],
            [
                (False, "passive", "ejected for 10s after 3 failures in a row"),
                (True, "passive", "ejection of 10s over"),
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_ends_ejections(self) -> None:
        """
        Stopping the checker ends its ejections, which nothing would end later.
        """
        self.fail_server(self.server.address)
        self.checker.stop()
        self.assertIs(self.server.status, ServerStatus.UP)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_takes_on_down_servers(self) -> None:
        """
        A checker without active checks brings back a server marked down
        before it started, as nothing else could.
        """
        pool = make_pool(2)
        pool.mark_down(ADDRESSES[0], "ejected for 10s after 3 failures in a row")
        self.make_checker(pool)
        self.assertEqual(
            (pool.server(ADDRESSES[0]).status, pool.server(ADDRESSES[0]).down_reason),
            (ServerStatus.UP, None),
        )

    def test_success_resets(self) -> None:
        """
        A good lease in between starts the count of failures again.
        """
        self.fail_server(self.server.address, 2)
        release_on(self.pool, self.server.address)
        self.fail_server(self.server.address, 2)
        self.assertIs(self.server.status, ServerStatus.UP)

    def test_backoff_grows(self) -> None:
        """
        Each ejection that follows soon after the last lasts twice as long,
        up to C{max_ejection}.
        """
        left = []
        for _ in range(4):
            self.fail_server(self.server.address)
            left.append(self.ejection_left())
            self.clock.advance(left[-1])
        self.assertEqual(left, [10.0, 20.0, 40.0, 40.0])

    def test_5xx_counted_when_asked(self) -> None:
        """
        5xx responses count as failures only with C{on_5xx}.
        """
        for _ in range(3):
            release_on(self.pool, self.server.address, status=503)
        self.assertIs(self.server.status, ServerStatus.UP)
        pool = make_pool(2)
        self.make_checker(pool, on_5xx=True)
        for status in (500, 502, 503):
            release_on(pool, ADDRESSES[0], status=status)
        self.assertIs(pool.server(ADDRESSES[0]).status, ServerStatus.DOWN)

    def test_max_ejection_percent(self) -> None:
        """
        No more than C{max_ejection_percent} of the servers are ejected at
        once; once one comes back another may go.
        """
        third = self.pool.server(ADDRESSES[2])
        for address in ADDRESSES[:3]:
            self.fail_server(address)
        self.assertEqual(
            [server.status for server in self.pool.servers],
            [ServerStatus.DOWN, ServerStatus.DOWN, ServerStatus.UP, ServerStatus.UP],
        )
        self.clock.advance(10.0)
        self.fail_server(third.address, 1)
        self.assertIs(third.status, ServerStatus.DOWN)

    def test_never_the_last_servers(self) -> None:
        """
        Passive checks alone never eject the last server that is up, whatever
        the percentage allows: not a lone server, nor the one left up beside
        a server that is down for another reason.
        """
        lone = make_pool(1)
        self.make_checker(lone, max_ejection_percent=100)
        self.fail_server(ADDRESSES[0], 10, pool=lone)
        self.assertIs(lone.servers[0].status, ServerStatus.UP)
        pair = make_pool(2)
        self.make_checker(pair, max_ejection_percent=100)
        pair.disable(ADDRESSES[1])
        self.fail_server(ADDRESSES[0], 10, pool=pair)
        self.assertIs(pair.server(ADDRESSES[0]).status, ServerStatus.UP)
        pair.enable(ADDRESSES[1])
        self.fail_server(ADDRESSES[0], 1, pool=pair)
        self.assertIs(pair.server(ADDRESSES[0]).status, ServerStatus.DOWN)
        self.fail_server(ADDRESSES[1], 10, pool=pair)
        self.assertIs(pair.server(ADDRESSES[1]).status, ServerStatus.UP)


class ActiveAndPassiveTests(SynchronousTestCase):
    """
    Tests for L{HealthChecker} with both kinds of check.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = make_pool(2)
        self.check = ScriptedCheck(self.clock)
        self.checker = HealthChecker(
            self.pool,
            self.clock,
            health=HealthCheck(interval=2.0, rise=2, fall=3, jitter=0.0),
            check=self.check,
            passive=PassiveCheck(consecutive_failures=3, base_ejection=30.0),
        )
        self.checker.start()
        self.addCleanup(self.checker.stop)
        self.server = self.pool.server(ADDRESSES[0])
        self.clock.advance(0.0)

    def eject(self) -> None:
        """
        Eject the first server by failing its leases.
        """
        for _ in range(3):
            release_on(self.pool, self.server.address, failed=True)
        self.assertIs(self.server.status, ServerStatus.DOWN)

    def test_active_checks_return_ejected_server(self) -> None:
        """
        An ejected server comes back after C{rise} passed probes, before its
        ejection is over, and the ejection's timer is cancelled.
        """
        self.eject()
        self.clock.advance(2.0)
        self.assertIs(self.server.status, ServerStatus.DOWN)
        self.clock.advance(2.0)
        self.assertEqual(self.server.status, ServerStatus.UP)
        times = sorted(call.getTime() for call in self.clock.getDelayedCalls())
        self.assertEqual(times, [6.0, 6.0])

    def test_failing_active_checks_outlast_ejection(self) -> None:
        """
        A server whose probes fail stays DOWN when its ejection ends, until
        its probes pass again.
        """
        self.check.passing[self.server.address] = False
        self.eject()
        for _ in range(15):
            self.clock.advance(2.0)
        self.assertEqual(self.clock.seconds(), 30.0)
        self.assertIs(self.server.status, ServerStatus.DOWN)
        self.assertEqual(self.server.down_reason, "3 checks failed: status 500 not in 200-399")
        self.check.passing[self.server.address] = True
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.assertIs(self.server.status, ServerStatus.UP)


class HTTPCheckTests(SynchronousTestCase):
    """
    Tests for L{HTTPCheck} on a memory reactor, where the bytes are scripted.
    """

    def probe(
        self, server: ServerState | None = None, **settings: object
    ) -> tuple[Deferred[str], Protocol, StringTransport]:
        """
        Start a probe, connect it and return its result, protocol and transport.
        """
        self.reactor = MemoryReactorClock()
        health = HealthCheck(**{"path": "/healthz", **settings})  # type: ignore[arg-type]
        check = HTTPCheck(self.reactor, self.reactor, health, max_body=64)
        result = check.probe(server or ServerState("10.0.0.1:8080"))
        [(host, port, factory, timeout, _)] = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("10.0.0.1", 8080, health.timeout))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return result, protocol, transport

    def closed(self, protocol: Protocol, transport: StringTransport) -> None:
        """
        Assert that the probe closed its connection, and close it.
        """
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_request(self) -> None:
        """
        The probe sends one request with the method, path and Host asked for,
        or the server's address as Host.
        """
        _, _, transport = self.probe()
        self.assertEqual(
            transport.value(),
            b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nConnection: close\r\n"
            b"User-Agent: txproxy-health\r\n\r\n",
        )
        _, _, transport = self.probe(method="HEAD", host="api.example.com", path="/caf\xe9")
        self.assertTrue(
            transport.value().startswith(b"HEAD /caf%C3%A9 HTTP/1.1\r\nHost: api.example.com\r\n")
        )

    def test_status_in_range_passes_after_close(self) -> None:
        """
        A status in range passes without the body being read; the result
        comes once the connection is closed.
        """
        result, protocol, transport = self.probe()
        protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertNoResult(result)
        self.closed(protocol, transport)
        self.assertEqual(self.successResultOf(result), "status 204")

    def test_interim_response_skipped(self) -> None:
        """
        An interim 1xx response is not the verdict: the final one is.
        """
        result, protocol, transport = self.probe(expect_status=(200, 200))
        protocol.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\n\r\n")
        self.closed(protocol, transport)
        self.assertEqual(
            self.failureResultOf(result, ProbeFailed).value.reason, "status 503 not in 200-200"
        )

    def test_body_text_across_pieces(self) -> None:
        """
        The text is found though it arrives split between two reads.
        """
        result, protocol, transport = self.probe(body="healthy")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nall heal")
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"thy here")
        self.closed(protocol, transport)
        self.assertEqual(self.successResultOf(result), "body contains 'healthy'")

    def test_body_read_bounded(self) -> None:
        """
        The probe reads no more than C{max_body} bytes of a body looking for
        its text.
        """
        result, protocol, transport = self.probe(body="healthy")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 60)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x" * 10 + b"healthy")
        self.closed(protocol, transport)
        self.assertEqual(
            self.failureResultOf(result, ProbeFailed).value.reason,
            "body does not contain 'healthy' in its first 64 bytes",
        )

    def test_body_without_text(self) -> None:
        """
        A whole body without the text fails.
        """
        result, protocol, transport = self.probe(body="healthy")
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstarting")
        self.closed(protocol, transport)
        self.assertEqual(
            self.failureResultOf(result, ProbeFailed).value.reason,
            "body does not contain 'healthy'",
        )

    def test_bad_response(self) -> None:
        """
        A response that breaks HTTP fails, saying how.
        """
        result, protocol, transport = self.probe()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        self.closed(protocol, transport)
        reason = self.failureResultOf(result, ProbeFailed).value.reason
        self.assertTrue(reason.startswith("bad response: "), reason)
        self.assertIn("Content-Length", reason)

    def test_closed_before_response(self) -> None:
        """
        A server closing before its response fails the probe.
        """
        result, protocol, _ = self.probe()
        protocol.connectionLost(Failure(ConnectionLost("reset")))
        self.assertIn(
            "connection closed before a response",
            self.failureResultOf(result, ProbeFailed).value.reason,
        )

    def test_timeout_aborts(self) -> None:
        """
        A server that does not answer in C{timeout} seconds fails the probe,
        and its connection is aborted; nothing stays scheduled.
        """
        result, protocol, transport = self.probe(timeout=1.5)
        self.reactor.advance(1.4)
        self.assertNoResult(result)
        self.reactor.advance(0.1)
        self.assertEqual(
            self.failureResultOf(result, ProbeFailed).value.reason, "timed out after 1.5s"
        )
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_verdict_kept_when_close_times_out(self) -> None:
        """
        A verdict reached before the timeout stands though the connection
        took too long to close.
        """
        result, protocol, _ = self.probe(timeout=1.0)
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.reactor.advance(1.0)
        self.assertEqual(self.successResultOf(result), "status 200")

    def test_check_for(self) -> None:
        """
        A health check with a path is an HTTP check, one without a TCP check.
        """
        memory = MemoryReactorClock()
        self.assertIsInstance(check_for(HealthCheck(), memory, memory), TCPConnectCheck)
        self.assertIsInstance(check_for(HealthCheck(path="/"), memory, memory), HTTPCheck)


class _Origin(Protocol):
    """
    A loopback server for probes: answers one request with its factory's
    canned response, or never.
    """

    factory: _OriginFactory

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.factory.requested.called:
            self.factory.requested.callback(self.received)
            if self.factory.response is not None:
                self.transport.write(self.factory.response)  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.factory.lost.called:
            self.factory.lost.callback(self.received)


class _OriginFactory(Factory):
    """
    Makes L{_Origin}s.

    @ivar response: what to answer, or L{None} for nothing.
    @ivar requested: fires with the request's head.
    @ivar lost: fires with what was received, when the connection is lost.
    """

    protocol = _Origin
    noisy = False

    def __init__(self, response: bytes | None) -> None:
        self.response = response
        self.requested: Deferred[bytes] = Deferred()
        self.lost: Deferred[bytes] = Deferred()


class ProbeTests(TestCase):
    """
    Tests for L{TCPConnectCheck} and L{HTTPCheck} against real servers on
    127.0.0.1, over plain TCP and TLS.
    """

    def origin(
        self, response: bytes | None = None, leaf: trustme.LeafCert | None = None
    ) -> tuple[_OriginFactory, ServerState]:
        """
        Start an origin on a free port, over TLS if given a certificate.
        """
        factory = _OriginFactory(response)
        port: IListeningPort
        if leaf is None:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            pem = leaf.private_key_and_cert_chain_pem.bytes()
            options = PrivateCertificate.loadPEM(pem).options()
            port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, ServerState(f"127.0.0.1:{port.getHost().port}")

    def http(self, **settings: object) -> HTTPCheck:
        health = HealthCheck(**{"path": "/healthz", **settings})  # type: ignore[arg-type]
        return HTTPCheck(reactor, reactor, health)

    @inlineCallbacks
    def test_tcp_connects(self) -> Deferred[None]:
        """
        A TCP check passes when the server accepts, and closes the connection
        without sending anything.
        """
        factory, server = self.origin()
        passed = yield TCPConnectCheck(reactor, reactor, 1.0).probe(server)
        self.assertEqual(passed, "connected")
        received = yield factory.lost
        self.assertEqual(received, b"")

    @inlineCallbacks
    def test_tcp_refused(self) -> Deferred[None]:
        """
        A TCP check fails on a port nothing listens on.
        """
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        address = f"127.0.0.1:{port.getHost().port}"
        yield port.stopListening()
        probe = TCPConnectCheck(reactor, reactor, 1.0).probe(ServerState(address))
        failure = yield self.assertFailure(probe, ProbeFailed)
        self.assertEqual(failure.reason, "connection refused")

    @inlineCallbacks
    def test_http_200(self) -> Deferred[None]:
        """
        An HTTP check passes on a status in range, having sent its request.
        """
        factory, server = self.origin(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        passed = yield self.http().probe(server)
        self.assertEqual(passed, "status 200")
        received = yield factory.lost
        self.assertTrue(received.startswith(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:"))

    @inlineCallbacks
    def test_http_500(self) -> Deferred[None]:
        """
        An HTTP check fails on a status out of range.
        """
        factory, server = self.origin(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
        failure = yield self.assertFailure(self.http().probe(server), ProbeFailed)
        self.assertEqual(failure.reason, "status 500 not in 200-399")
        yield factory.lost

    @inlineCallbacks
    def test_http_body_mismatch(self) -> Deferred[None]:
        """
        An HTTP check fails when the body lacks the text asked for.
        """
        factory, server = self.origin(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstarting")
        probe = self.http(body="ready").probe(server)
        failure = yield self.assertFailure(probe, ProbeFailed)
        self.assertEqual(failure.reason, "body does not contain 'ready'")
        yield factory.lost

    @inlineCallbacks
    def test_http_never_answers(self) -> Deferred[None]:
        """
        An HTTP check of a server that never answers fails after its timeout
        and closes the connection.
        """
        clock = Clock()
        factory, server = self.origin(None)
        probe = HTTPCheck(reactor, clock, HealthCheck(path="/", timeout=1.0)).probe(server)
        yield factory.requested
        self.assertNoResult(probe)
        clock.advance(1.0)
        failure = yield self.assertFailure(probe, ProbeFailed)
        self.assertEqual(failure.reason, "timed out after 1s")
        yield factory.lost

    @inlineCallbacks
    def test_tls(self) -> Deferred[None]:
        """
        A TLS server is checked over TLS: a TCP check passes once the
        handshake completes, an HTTP check reads the response through TLS.
        """
        ca = trustme.CA()
        leaf = ca.issue_cert("origin.internal")
        trust = Certificate.loadPEM(ca.cert_pem.bytes())
        factory, server = self.origin(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", leaf)
        server.tls = optionsForClientTLS("origin.internal", trustRoot=trust)
        passed = yield TCPConnectCheck(reactor, reactor, 2.0).probe(server)
        self.assertEqual(passed, "TLS handshake completed")
        yield factory.lost
        factory, server = self.origin(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", leaf)
        server.tls = optionsForClientTLS("origin.internal", trustRoot=trust)
        passed = yield self.http(timeout=2.0).probe(server)
        self.assertEqual(passed, "status 200")
        received = yield factory.lost
        self.assertTrue(received.startswith(b"GET /healthz HTTP/1.1\r\n"))

    @inlineCallbacks
    def test_tls_unverified(self) -> Deferred[None]:
        """
        A TLS server whose certificate does not verify fails the check.
        """
        leaf = trustme.CA().issue_cert("origin.internal")
        stranger = Certificate.loadPEM(trustme.CA().cert_pem.bytes())
        factory, server = self.origin(None, leaf)
        server.tls = optionsForClientTLS("origin.internal", trustRoot=stranger)
        probe = TCPConnectCheck(reactor, reactor, 2.0).probe(server)
        failure = yield self.assertFailure(probe, ProbeFailed)
        self.assertTrue(failure.reason.startswith("TLS handshake failed"), failure.reason)
        yield factory.lost


class HealthServiceTests(SynchronousTestCase):
    """
    Tests for L{HealthService}.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        settings: Sequence[config.Pool] = [
            config.Pool(
                "api",
                [config.Server("10.0.0.1:80")],
                health=HealthCheck(path="/healthz", jitter=0.0),
            ),
            config.Pool("db", [config.Server("10.0.0.2:5432")], health=HealthCheck(), passive=None),
            config.Pool("static", [config.Server("10.0.0.3:80")], passive=None),
            config.Pool("web", [config.Server("10.0.0.4:80"), config.Server("10.0.0.5:80")]),
        ]
        self.pools = {
            pool.name: Pool(
                pool.name, [ServerState(server.address) for server in pool.servers], RoundRobin()
            )
            for pool in settings
        }
        self.service = HealthService(settings, self.pools, self.reactor, random=lambda: 0.5)

    def test_checkers_for_pools_with_checks(self) -> None:
        """
        Each pool with an active or a passive check gets a checker.
        """
        self.assertEqual(sorted(self.service.checkers), ["api", "db", "web"])

    def test_start_and_stop(self) -> None:
        """
        Starting probes the servers of pools with an active check; stopping
        leaves nothing scheduled and nothing observing the pools.
        """
        self.service.startService()
        self.reactor.advance(1.0)
        connected = sorted((host, port) for host, port, *_ in self.reactor.tcpClients)
        self.assertEqual(connected, [("10.0.0.1", 80), ("10.0.0.2", 5432)])
        self.service.stopService()
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(any(checker.running for checker in self.service.checkers.values()))
        for _ in range(5):
            release_on(self.pools["web"], "10.0.0.4:80", failed=True)
        self.assertIs(self.pools["web"].servers[0].status, ServerStatus.UP)

    def test_passive_by_default(self) -> None:
        """
        A pool's default passive check ejects a server after 5 failures in a row.
        """
        self.service.startService()
        self.addCleanup(self.service.stopService)
        for _ in range(5):
            release_on(self.pools["web"], "10.0.0.4:80", failed=True)
        self.assertIs(self.pools["web"].servers[0].status, ServerStatus.DOWN)
