"""
Tests for L{txproxy.pool}: server state, leases, the backup tier, operators'
changes, the queue and slow start.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from txproxy.balancing import RoundRobin
from txproxy.interfaces import IPoolObserver, IServerView, PickContext
from txproxy.pool import (
    WEIGHT_SCALE,
    DuplicateServer,
    Lease,
    NoSuchServer,
    Pool,
    QueueFull,
    QueueTimeout,
    ServerState,
    ServerStatus,
    Unavailable,
)


def make_pool() -> Pool:
    return Pool(
        "api",
        [
            ServerState("10.0.0.1:80"),
            ServerState("10.0.0.2:80"),
            ServerState("10.0.0.3:80", backup=True),
        ],
        RoundRobin(),
    )


def leased(pool: Pool, context: PickContext | None = None) -> Lease:
    """
    Lease a server of C{pool}, failing the test if none is free.
    """
    lease = pool.lease(context or PickContext())
    assert lease is not None
    return lease


def result_of(deferred: Deferred[Lease]) -> Lease:
    """
    The lease a L{Deferred} has already fired with.
    """
    results: list[Lease] = []
    deferred.addCallback(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


@implementer(IPoolObserver)
class RecordingObserver:
    """
    Records what a pool tells its observers.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def server_released(self, server: IServerView, failed: bool, status: int | None) -> None:
        self.events.append(("released", server.address, (failed, status)))

    def server_added(self, server: IServerView) -> None:
        self.events.append(("added", server.address, None))

    def server_removed(self, server: IServerView) -> None:
        self.events.append(("removed", server.address, None))


class ServerStateTests(SynchronousTestCase):
    """
    Tests for L{ServerState}.
    """

    def test_view(self) -> None:
        """
        A server state is what balancers see of a server.
        """
        verifyObject(IServerView, ServerState("10.0.0.1:80"))

    def test_available(self) -> None:
        """
        A server is available while up and below its connection cap.
        """
        server = ServerState("10.0.0.1:80", max_connections=1)
        self.assertTrue(server.available)
        server.active = 1
        self.assertFalse(server.available)
        server.active = 0
        for status in (ServerStatus.DOWN, ServerStatus.DRAINING, ServerStatus.DISABLED):
            server.status = status
            self.assertFalse(server.available)

    def test_host_and_port(self) -> None:
        """
        The address splits into host and port, IPv6 brackets removed.
        """
        server = ServerState("[::1]:8080")
        self.assertEqual((server.host, server.port), ("::1", 8080))

    def test_weight_scaled(self) -> None:
        """
        The weight given is kept as C{configured_weight}; balancers read it
        scaled by L{WEIGHT_SCALE}, so that slow start can give a fraction of it.
        """
        server = ServerState("10.0.0.1:80", weight=3)
        self.assertEqual(
            (server.configured_weight, server.weight, server.full_weight),
            (3, 3 * WEIGHT_SCALE, 3 * WEIGHT_SCALE),
        )

    def test_healthy_unless_made_down(self) -> None:
        """
        A server starts healthy unless it is made DOWN.
        """
        self.assertTrue(ServerState("10.0.0.1:80").healthy)
        self.assertFalse(ServerState("10.0.0.1:80", status=ServerStatus.DOWN).healthy)


class PoolTests(SynchronousTestCase):
    """
    Tests for L{Pool} and L{Lease}.
    """

    def test_lease_counts(self) -> None:
        """
        A lease counts the server active until released, and in its total.
        """
        pool = make_pool()
        lease = leased(pool)
        self.assertEqual((lease.server.active, lease.server.total), (1, 1))
        lease.release()
        lease.release()
        self.assertEqual((lease.server.active, lease.server.total), (0, 1))

    def test_failures_counted(self) -> None:
        """
        A failed release counts a consecutive and a total failure; a good
        release resets the consecutive count.
        """
        pool = make_pool()
        server = pool.server("10.0.0.1:80")
        only_first = PickContext(exclude=frozenset({"10.0.0.2:80"}))
        for failed in (True, True):
            leased(pool, only_first).release(failed=failed)
        self.assertEqual((server.fails, server.failures), (2, 2))
        leased(pool, only_first).release()
        self.assertEqual((server.fails, server.failures), (0, 2))

    def test_backup_only_without_primary(self) -> None:
        """
        The backup takes work only while no primary is up.
        """
        pool = make_pool()
        picked = {leased(pool).server.address for _ in range(4)}
        self.assertEqual(picked, {"10.0.0.1:80", "10.0.0.2:80"})
        pool.mark_down("10.0.0.1:80")
        pool.drain("10.0.0.2:80")
        self.assertEqual(leased(pool).server.address, "10.0.0.3:80")
        pool.mark_up("10.0.0.1:80")
        self.assertEqual(leased(pool).server.address, "10.0.0.1:80")

    def test_backup_after_primaries_tried(self) -> None:
        """
        A retry that has tried every primary goes to the backup.
        """
        pool = make_pool()
        lease = leased(pool, PickContext(exclude=frozenset({"10.0.0.1:80", "10.0.0.2:80"})))
        self.assertEqual(lease.server.address, "10.0.0.3:80")

    def test_none_when_nothing_available(self) -> None:
        """
        With every server down there is no lease.
        """
        pool = make_pool()
        for server in pool.servers:
            pool.mark_down(server.address)
        self.assertIsNone(pool.lease(PickContext()))

    def test_unknown_server(self) -> None:
        """
        Asking for an address the pool does not have raises L{NoSuchServer}.
        """
        self.assertRaises(NoSuchServer, make_pool().mark_down, "10.9.9.9:80")

    def test_duplicate_addresses_refused(self) -> None:
        """
        A pool cannot be made with two servers at one address.
        """
        error = self.assertRaises(
            DuplicateServer,
            Pool,
            "api",
            [ServerState("10.0.0.1:80"), ServerState("10.0.0.1:80")],
            RoundRobin(),
        )
        self.assertEqual(str(error), "pool api already has a server 10.0.0.1:80")

    def test_queue_needs_clock(self) -> None:
        """
        A pool with a queue or slow start needs a clock to time them.
        """
        servers = [ServerState("10.0.0.1:80")]
        self.assertRaises(ValueError, Pool, "api", servers, RoundRobin(), queue_size=1)
        self.assertRaises(ValueError, Pool, "api", servers, RoundRobin(), slow_start=1.0)


class ObserverTests(SynchronousTestCase):
    """
    Tests for the observers of a L{Pool}.
    """

    def test_observer_interface(self) -> None:
        """
        The test's observer provides L{IPoolObserver}, so what it shows holds
        for every provider.
        """
        verifyObject(IPoolObserver, RecordingObserver())

    def test_each_release_observed(self) -> None:
        """
        Each release is told to every observer with the server, whether it
        failed and the response status; a removed observer hears nothing more.
        """
        pool = make_pool()
        observer = RecordingObserver()
        pool.add_observer(observer)
        first, second = leased(pool), leased(pool)
        first.release(failed=True)
        second.release(status=503)
        self.assertEqual(
            observer.events,
            [
                ("released", first.server.address, (True, None)),
                ("released", second.server.address, (False, 503)),
            ],
        )
        pool.remove_observer(observer)
        leased(pool).release()
        self.assertEqual(len(observer.events), 2)

    def test_membership_observed(self) -> None:
        """
        Observers hear of servers added and removed.
        """
        pool = make_pool()
        observer = RecordingObserver()
        pool.add_observer(observer)
        pool.add(ServerState("10.0.0.4:80"))
        pool.remove("10.0.0.4:80")
        self.assertEqual(
            observer.events, [("added", "10.0.0.4:80", None), ("removed", "10.0.0.4:80", None)]
        )


class OperatorTests(SynchronousTestCase):
    """
    Tests for the changes operators make: drain, disable, enable, add, remove.
    """

    def test_health_never_undoes_operators(self) -> None:
        """
        C{mark_up} brings back a DOWN server, but leaves a DRAINING or
        DISABLED one as it is; C{mark_down} does not change them either.
        """
        pool = make_pool()
        pool.disable("10.0.0.1:80")
        pool.drain("10.0.0.2:80")
        for address in ("10.0.0.1:80", "10.0.0.2:80"):
            pool.mark_down(address, "failed")
            pool.mark_up(address)
        self.assertEqual(
            [server.status for server in pool.servers],
            [ServerStatus.DISABLED, ServerStatus.DRAINING, ServerStatus.UP],
        )

    def test_disabled_takes_no_work(self) -> None:
        """
        A disabled server is never leased; its backup takes the work.
        """
        pool = make_pool()
        pool.disable("10.0.0.1:80")
        pool.disable("10.0.0.2:80")
        self.assertEqual({leased(pool).server.address for _ in range(3)}, {"10.0.0.3:80"})

    def test_enable_follows_health(self) -> None:
        """
        C{enable} makes a server UP if its checks pass, else DOWN until they do.
        """
        pool = make_pool()
        server = pool.server("10.0.0.1:80")
        pool.disable(server.address)
        pool.mark_down(server.address, "3 checks failed")
        self.assertEqual((server.healthy, server.down_reason), (False, "3 checks failed"))
        pool.enable(server.address)
        self.assertIs(server.status, ServerStatus.DOWN)
        pool.mark_up(server.address)
        self.assertEqual((server.status, server.down_reason), (ServerStatus.UP, None))
        pool.drain(server.address)
        pool.enable(server.address)
        self.assertIs(server.status, ServerStatus.UP)

    def test_add(self) -> None:
        """
        An added server takes work at once; an address already present is
        refused with L{DuplicateServer}.
        """
        pool = make_pool()
        pool.mark_down("10.0.0.1:80")
        pool.mark_down("10.0.0.2:80")
        pool.add(ServerState("10.0.0.4:80"))
        self.assertEqual(leased(pool).server.address, "10.0.0.4:80")
        self.assertEqual(pool.servers[-1].address, "10.0.0.4:80")
        error = self.assertRaises(DuplicateServer, pool.add, ServerState("10.0.0.4:80"))
        self.assertEqual((error.pool, error.address), ("api", "10.0.0.4:80"))

    def test_update_in_place(self) -> None:
        """
        C{update} changes a server's weight, tier and cap in place, keeping
        its counters and the order of its tier.
        """
        pool = make_pool()
        lease = leased(pool)
        server = lease.server
        pool.update(server.address, weight=4, backup=True, max_connections=1)
        self.assertEqual(
            (server.weight, server.backup, server.max_connections, server.active, server.total),
            (400, True, 1, 1, 1),
        )
        pool.mark_down("10.0.0.2:80")
        pool.mark_down("10.0.0.3:80")
        self.assertIsNone(pool.lease(PickContext()))
        lease.release()
        self.assertEqual(leased(pool).server.address, server.address)
        pool.update(server.address, weight=1, backup=False, max_connections=None)
        self.assertEqual(
            [each.address for each in pool.servers if not each.backup],
            ["10.0.0.1:80", "10.0.0.2:80"],
        )

    def test_remove_idle(self) -> None:
        """
        An idle server is taken out at once.
        """
        pool = make_pool()
        removed = pool.remove("10.0.0.2:80")
        self.assertIsNone(self.successResultOf(removed))
        self.assertRaises(NoSuchServer, pool.server, "10.0.0.2:80")
        self.assertEqual({leased(pool).server.address for _ in range(3)}, {"10.0.0.1:80"})

    def test_remove_drains_first(self) -> None:
        """
        A busy server is drained: it takes no new work, its work in flight
        goes on, and it leaves the pool when its last lease is released.
        """
        pool = make_pool()
        busy = leased(pool, PickContext(exclude=frozenset({"10.0.0.2:80"})))
        other = leased(pool, PickContext(exclude=frozenset({"10.0.0.2:80"})))
        removed = pool.remove("10.0.0.1:80")
        self.assertNoResult(removed)
        self.assertIs(busy.server.status, ServerStatus.DRAINING)
        self.assertEqual(leased(pool).server.address, "10.0.0.2:80")
        busy.release()
        self.assertNoResult(removed)
        other.release()
        self.successResultOf(removed)
        self.assertEqual([server.address for server in pool.servers][:1], ["10.0.0.2:80"])

    def test_removal_is_final(self) -> None:
        """
        A server being removed stays DRAINING whatever else is asked of it,
        and its address cannot be added again until it is out; cancelling
        the wait for its removal does not stop it.
        """
        pool = make_pool()
        lease = leased(pool)
        address = lease.server.address
        removed = pool.remove(address)
        pool.enable(address)
        pool.disable(address)
        pool.mark_up(address)
        self.assertIs(lease.server.status, ServerStatus.DRAINING)
        self.assertRaises(DuplicateServer, pool.add, ServerState(address))
        removed.cancel()
        self.failureResultOf(removed, CancelledError)
        lease.release()
        self.assertRaises(NoSuchServer, pool.server, address)
        pool.add(ServerState(address))
        self.assertIs(pool.server(address).status, ServerStatus.UP)


class QueueTests(SynchronousTestCase):
    """
    Tests for L{Pool.wait}: the bounded first-come queue of requests waiting
    for servers at their connection cap.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = Pool(
            "api",
            [ServerState("10.0.0.1:80", max_connections=1), ServerState("10.0.0.2:80")],
            RoundRobin(),
            queue_size=2,
            queue_timeout=5.0,
            clock=self.clock,
        )
        self.pool.drain("10.0.0.2:80")
        self.first = leased(self.pool)

    def test_lease_at_once_when_free(self) -> None:
        """
        A wait fires at once when a server is free.
        """
        self.first.release()
        lease = result_of(self.pool.wait(PickContext()))
        self.assertEqual((lease.server.address, self.pool.queued), ("10.0.0.1:80", 0))

    def test_first_come_first_served(self) -> None:
        """
        Each release hands its slot to the oldest request waiting; nothing
        is left scheduled once the queue is empty.
        """
        waits = [self.pool.wait(PickContext()), self.pool.wait(PickContext())]
        self.assertEqual(self.pool.queued, 2)
        for wait in waits:
            self.assertNoResult(wait)
        self.first.release()
        second = result_of(waits[0])
        self.assertNoResult(waits[1])
        self.assertEqual((second.server.address, second.server.active), ("10.0.0.1:80", 1))
        second.release()
        result_of(waits[1])
        self.assertEqual((self.pool.queued, self.clock.getDelayedCalls()), (0, []))

    def test_full(self) -> None:
        """
        A request finding C{queue_size} others waiting fails at once with
        L{QueueFull}.
        """
        self.pool.wait(PickContext())
        self.pool.wait(PickContext())
        error = self.failureResultOf(self.pool.wait(PickContext()), QueueFull).value
        self.assertEqual((error.pool, error.size), ("api", 2))
        self.assertIsInstance(error, Unavailable)

    def test_timeout(self) -> None:
        """
        A request that waited C{queue_timeout} seconds fails with
        L{QueueTimeout} and leaves the queue; a timeout may be given instead.
        """
        default = self.pool.wait(PickContext())
        short = self.pool.wait(PickContext(), timeout=1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.failureResultOf(short, QueueTimeout).value.timeout, 1.0)
        self.clock.advance(3.9)
        self.assertNoResult(default)
        self.clock.advance(0.1)
        self.failureResultOf(default, QueueTimeout)
        self.assertEqual(self.pool.queued, 0)
        self.first.release()
        self.assertEqual(self.first.server.active, 0)

    def test_cancel_leaves_queue(self) -> None:
        """
        A cancelled wait leaves the queue and its timer is cancelled: the
        slot goes to the next request.
        """
        cancelled = self.pool.wait(PickContext())
        waiting = self.pool.wait(PickContext())
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        self.assertEqual((self.pool.queued, len(self.clock.getDelayedCalls())), (1, 1))
        self.first.release()
        self.assertEqual(result_of(waiting).server.address, "10.0.0.1:80")

    def test_hand_over_respects_exclusions(self) -> None:
        """
        A slot goes to the oldest request that may use its server: one that
        already tried it waits on for another.
        """
        self.pool.enable("10.0.0.2:80")
        self.pool.server("10.0.0.2:80").max_connections = 1
        other = leased(self.pool)
        retry = self.pool.wait(PickContext(exclude=frozenset({"10.0.0.1:80"})))
        fresh = self.pool.wait(PickContext())
        self.first.release()
        self.assertNoResult(retry)
        self.assertEqual(result_of(fresh).server.address, "10.0.0.1:80")
        other.release()
        self.assertEqual(result_of(retry).server.address, "10.0.0.2:80")

    def test_unavailable_when_nothing_may_free(self) -> None:
        """
        When no server the request may use is up, waiting cannot help: the
        wait fails at once with L{Unavailable}, and nothing is scheduled.
        """
        self.pool.mark_down("10.0.0.1:80")
        error = self.failureResultOf(self.pool.wait(PickContext()), Unavailable).value
        self.assertNotIsInstance(error, QueueFull)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_queue(self) -> None:
        """
        Without a queue, a request finding every server busy fails at once.
        """
        pool = Pool("db", [ServerState("10.0.0.1:80", max_connections=1)], RoundRobin())
        leased(pool)
        self.failureResultOf(pool.wait(PickContext()), QueueFull)

    def test_served_when_a_server_comes_up(self) -> None:
        """
        A server coming up, enabled or added serves the requests waiting.
        """
        waits = [self.pool.wait(PickContext()) for _ in range(2)]
        self.pool.enable("10.0.0.2:80")
        self.assertEqual([result_of(wait).server.address for wait in waits], ["10.0.0.2:80"] * 2)

    def test_draining_server_hands_nothing_over(self) -> None:
        """
        A draining server's released slot is not given to a waiting request.
        """
        waiting = self.pool.wait(PickContext())
        self.pool.drain("10.0.0.1:80")
        self.first.release()
        self.assertNoResult(waiting)
        self.assertEqual(self.first.server.active, 0)


class SlowStartTests(SynchronousTestCase):
    """
    Tests for slow start: the weight of a server coming up ramps up over
    C{slow_start} seconds.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = Pool(
            "api",
            [ServerState("10.0.0.1:80"), ServerState("10.0.0.2:80", weight=2)],
            RoundRobin(),
            slow_start=10.0,
            clock=self.clock,
        )
        self.server = self.pool.server("10.0.0.2:80")

    def test_not_at_start(self) -> None:
        """
        The servers a pool starts with have their full weight at once.
        """
        self.assertEqual([server.weight for server in self.pool.servers], [100, 200])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ramp_after_coming_up(self) -> None:
        """
        A server that comes up starts at a tenth of its weight and reaches
        all of it, linearly, after C{slow_start} seconds; then no timer is left.
        """
        self.pool.mark_down(self.server.address)
        self.pool.mark_up(self.server.address)
        weights = [self.server.weight]
        for _ in range(10):
            self.clock.advance(1.0)
            weights.append(self.server.weight)
        self.assertEqual(weights, [20, 38, 56, 74, 92, 110, 128, 146, 164, 182, 200])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ramped_server_gets_its_share(self) -> None:
        """
        Balancers give a ramping server the share of its weight now.
        """
        self.pool.mark_down(self.server.address)
        self.pool.mark_up(self.server.address)
        picks = Counter(leased(self.pool).server.address for _ in range(120))
        self.assertEqual(picks, Counter({"10.0.0.1:80": 100, "10.0.0.2:80": 20}))

    def test_added_and_enabled_servers_ramp(self) -> None:
        """
        Added and enabled servers ramp up too.
        """
        added = ServerState("10.0.0.3:80")
        self.pool.add(added)
        self.pool.disable(self.server.address)
        self.pool.enable(self.server.address)
        self.assertEqual((added.weight, self.server.weight), (10, 20))
        self.clock.advance(10.0)
        self.assertEqual((added.weight, self.server.weight), (100, 200))

    def test_down_ends_ramp(self) -> None:
        """
        A server that goes down while ramping ends its ramp; coming up again
        starts a new one from the bottom.
        """
        self.pool.mark_down(self.server.address)
        self.pool.mark_up(self.server.address)
        self.clock.advance(5.0)
        self.pool.mark_down(self.server.address)
        self.clock.advance(1.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pool.mark_up(self.server.address)
        self.assertEqual(self.server.weight, 20)

    def test_without_slow_start(self) -> None:
        """
        Without slow start a server comes back at its full weight.
        """
        pool = make_pool()
        server = pool.server("10.0.0.1:80")
        pool.mark_down(server.address)
        pool.mark_up(server.address)
        self.assertEqual(server.weight, server.full_weight)
