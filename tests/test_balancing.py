# -*- test-case-name: tests.test_balancing -*-
"""
Tests for L{txproxy.balancing}.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from random import Random
from typing import TYPE_CHECKING

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txproxy.balancing import (
    BALANCERS,
    IPHash,
    LeastConnections,
    PowerOfTwo,
    RoundRobin,
    UnknownBalancer,
    balancer_for,
)
from txproxy.interfaces import IBalancer, IServerView, PickContext
from txproxy.pool import ServerState, ServerStatus

if TYPE_CHECKING:
    _MixinBase = SynchronousTestCase
else:
    _MixinBase = object


KEYED = PickContext(hash_key=b"192.0.2.7")
CLIENT_IPS = [f"198.{i // 65536}.{i // 256 % 256}.{i % 256}".encode() for i in range(10_000)]


def servers(count: int) -> list[ServerState]:
    """
    Make C{count} servers C{10.0.0.1:80}, C{10.0.0.2:80}, ... of weight 1.
    """
    return [ServerState(f"10.0.0.{n}:80") for n in range(1, count + 1)]


def addresses(picked: Iterable[IServerView | None]) -> list[str | None]:
    """
    The addresses of picked servers, keeping L{None} for no pick.
    """
    return [None if server is None else server.address for server in picked]


def picks(
    balancer: IBalancer,
    pool: Sequence[IServerView],
    count: int,
    context: PickContext = KEYED,
) -> list[str | None]:
    """
    The addresses of C{count} successive picks from C{pool}.
    """
    return addresses(balancer.pick(pool, context) for _ in range(count))


def placement(
    balancer: IBalancer, pool: Sequence[IServerView], exclude: frozenset[str] = frozenset()
) -> dict[bytes, str | None]:
    """
    The address each of L{CLIENT_IPS} is sent to.
    """
    picked = (balancer.pick(pool, PickContext(hash_key=key, exclude=exclude)) for key in CLIENT_IPS)
    return dict(zip(CLIENT_IPS, addresses(picked), strict=True))


class _EligibilityTestsMixin(_MixinBase):
    """
    Tests every balancer must pass: it provides L{IBalancer} and picks only
    servers that are available and not excluded.
    """

    make_balancer: Callable[[], IBalancer]

    def test_provides_interface(self) -> None:
        """
        The balancer provides L{IBalancer}.
        """
        verifyObject(IBalancer, self.make_balancer())

    def test_unavailable_servers_skipped(self) -> None:
        """
        Servers that are down, draining or at their connection cap are never
        picked.
        """
        pool = [
            ServerState("10.0.0.1:80", status=ServerStatus.DOWN),
            ServerState("10.0.0.2:80", status=ServerStatus.DRAINING),
            ServerState("10.0.0.3:80", max_connections=2, active=2),
            ServerState("10.0.0.4:80", active=5),
        ]
        self.assertEqual(picks(self.make_balancer(), pool, 10), ["10.0.0.4:80"] * 10)

    def test_excluded_servers_skipped(self) -> None:
        """
        Servers whose address is in C{context.exclude} are never picked, however
        lightly loaded.
        """
        pool = [ServerState("10.0.0.1:80", weight=5), ServerState("10.0.0.2:80", active=9)]
        context = PickContext(hash_key=b"192.0.2.7", exclude=frozenset({"10.0.0.1:80"}))
        self.assertEqual(picks(self.make_balancer(), pool, 10, context), ["10.0.0.2:80"] * 10)

    def test_none_when_no_server_eligible(self) -> None:
        """
        With no servers, or none available and not excluded, the pick is L{None}.
        """
        balancer = self.make_balancer()
        pool = [
            ServerState("10.0.0.1:80", status=ServerStatus.DOWN),
            ServerState("10.0.0.2:80"),
        ]
        context = PickContext(hash_key=b"192.0.2.7", exclude=frozenset({"10.0.0.2:80"}))
        self.assertIsNone(balancer.pick([], KEYED))
        self.assertIsNone(balancer.pick(pool, context))
        self.assertIsNone(balancer.pick(pool, PickContext(exclude=context.exclude)))


class RoundRobinTests(_EligibilityTestsMixin, SynchronousTestCase):
    """
    Tests for L{RoundRobin}.
    """

    make_balancer = RoundRobin

    def test_smooth_weighted_sequence(self) -> None:
        """
        Weights 5, 1 and 1 give nginx's smooth sequence C{a a b a c a a}, again
        and again.
        """
        pool = [
            ServerState("a:80", weight=5),
            ServerState("b:80", weight=1),
            ServerState("c:80", weight=1),
        ]
        cycle = ["a:80", "a:80", "b:80", "a:80", "c:80", "a:80", "a:80"]
        self.assertEqual(picks(RoundRobin(), pool, 14), cycle * 2)

    def test_equal_weights_cycle_in_order(self) -> None:
        """
        Servers of equal weight are picked one after another in configuration
        order.
        """
        pool = servers(3)
        self.assertEqual(picks(RoundRobin(), pool, 6), [server.address for server in pool] * 2)

    def test_unavailable_server_returns_in_turn(self) -> None:
        """
        A server skipped while down rejoins the rotation when it comes back up.
        """
        first, second, third = pool = servers(3)
        balancer = RoundRobin()
        second.status = ServerStatus.DOWN
        self.assertEqual(picks(balancer, pool, 2), [first.address, third.address])
        second.status = ServerStatus.UP
        self.assertEqual(picks(balancer, pool, 3), [first.address, second.address, third.address])

    def test_added_server_joins_rotation(self) -> None:
        """
        A server added between picks starts with a current weight of zero and
        takes its turn.
        """
        first, second, third = servers(3)
        balancer = RoundRobin()
        self.assertEqual(picks(balancer, [first, second], 1), [first.address])
        self.assertEqual(
            picks(balancer, [first, second, third], 4),
            [second.address, third.address, first.address, second.address],
        )

    def test_removed_server_forgotten(self) -> None:
        """
        A server removed between picks is never picked, and its bookkeeping is
        forgotten: when it returns it starts afresh at zero.
        """
        first, second, third = servers(3)
        balancer = RoundRobin()
        self.assertEqual(picks(balancer, [first, second, third], 1), [first.address])
        self.assertEqual(picks(balancer, [second, third], 1), [second.address])
        # Had the first kept its current weight of -2, the second would come
        # before it here.
        self.assertEqual(picks(balancer, [first, second, third], 2), [third.address, first.address])


class LeastConnectionsTests(_EligibilityTestsMixin, SynchronousTestCase):
    """
    Tests for L{LeastConnections}.
    """

    make_balancer = LeastConnections

    def test_least_loaded_picked(self) -> None:
        """
        The server with the fewest active connections is picked.
        """
        pool = [
            ServerState("10.0.0.1:80", active=3),
            ServerState("10.0.0.2:80", active=1),
            ServerState("10.0.0.3:80", active=2),
        ]
        self.assertEqual(picks(LeastConnections(), pool, 3), ["10.0.0.2:80"] * 3)

    def test_load_divided_by_weight(self) -> None:
        """
        Load is active connections per unit of weight: 3 on weight 4 is lighter
        than 1 on weight 1, and 3 on weight 2 is heavier than 1 on weight 1.
        """
        balancer = LeastConnections()
        heavy = ServerState("10.0.0.1:80", weight=4, active=3)
        light = ServerState("10.0.0.2:80", weight=1, active=1)
        self.assertIs(balancer.pick([light, heavy], KEYED), heavy)
        heavy = ServerState("10.0.0.1:80", weight=2, active=3)
        self.assertIs(balancer.pick([heavy, light], KEYED), light)

    def test_equal_weighted_loads_tie(self) -> None:
        """
        Two active on weight 2 ties with one active on weight 1: both take
        turns.
        """
        pool = [
            ServerState("10.0.0.1:80", weight=2, active=2),
            ServerState("10.0.0.2:80", weight=1, active=1),
            ServerState("10.0.0.3:80", weight=1, active=2),
        ]
        self.assertEqual(picks(LeastConnections(), pool, 4), ["10.0.0.1:80", "10.0.0.2:80"] * 2)

    def test_ties_rotate(self) -> None:
        """
        Servers tied for the lightest load are picked in turn, in configuration
        order.
        """
        pool = servers(3)
        self.assertEqual(
            picks(LeastConnections(), pool, 6), [server.address for server in pool] * 2
        )

    def test_rotation_resumes_after_last_pick(self) -> None:
        """
        When the tied servers change, the rotation goes on from the position
        after the last pick rather than starting over.
        """
        first, second, third, fourth = pool = servers(4)
        balancer = LeastConnections()
        self.assertIs(balancer.pick(pool, KEYED), first)
        second.active = 1
        self.assertIs(balancer.pick(pool, KEYED), third)
        second.active = 0
        self.assertEqual(picks(balancer, pool, 3), [fourth.address, first.address, second.address])


class IPHashTests(_EligibilityTestsMixin, SynchronousTestCase):
    """
    Tests for L{IPHash}.
    """

    make_balancer = IPHash

    def assert_share(self, share: float, low: float, high: float) -> None:
        """
        Assert that C{low <= share <= high}.
        """
        self.assertTrue(low <= share <= high, f"{share:.3f} is not in [{low}, {high}]")

    def test_same_key_same_server(self) -> None:
        """
        One key is sent to the same server every time.
        """
        pool = servers(4)
        for key in CLIENT_IPS[:20]:
            context = PickContext(hash_key=key)
            self.assertEqual(len(set(picks(IPHash(), pool, 5, context))), 1)

    def test_even_distribution(self) -> None:
        """
        Across four servers of equal weight, each gets between 20% and 30% of
        10,000 keys.
        """
        counts = Counter(placement(IPHash(), servers(4)).values())
        self.assertEqual(len(counts), 4)
        for count in counts.values():
            self.assert_share(count / len(CLIENT_IPS), 0.20, 0.30)

    def test_removal_moves_only_its_keys(self) -> None:
        """
        Removing one of four servers moves exactly the keys it held, about a
        quarter, and no others.
        """
        pool = servers(4)
        before = placement(IPHash(), pool)
        after = placement(IPHash(), pool[:2] + pool[3:])
        moved = {key for key in CLIENT_IPS if before[key] != after[key]}
        held = {key for key in CLIENT_IPS if before[key] == pool[2].address}
        self.assertEqual(moved, held)
        self.assert_share(len(moved) / len(CLIENT_IPS), 0.20, 0.30)

    def test_exclusion_moves_only_its_keys(self) -> None:
        """
        Excluding a server, as a retry does, moves only the keys it held.
        """
        pool = servers(4)
        before = placement(IPHash(), pool)
        after = placement(IPHash(), pool, exclude=frozenset({pool[0].address}))
        moved = {key for key in CLIENT_IPS if before[key] != after[key]}
        self.assertEqual(moved, {key for key in CLIENT_IPS if before[key] == pool[0].address})

    def test_weights_skew_distribution(self) -> None:
        """
        A server of weight 3 beside one of weight 1 gets about three quarters of
        the keys.
        """
        pool = [ServerState("10.0.0.1:80", weight=3), ServerState("10.0.0.2:80")]
        counts = Counter(placement(IPHash(), pool).values())
        self.assert_share(counts["10.0.0.1:80"] / len(CLIENT_IPS), 0.72, 0.78)

    def test_no_key_round_robin(self) -> None:
        """
        Without a hash key, picks go round robin.
        """
        pool = servers(3)
        self.assertEqual(
            picks(IPHash(), pool, 6, PickContext()), [server.address for server in pool] * 2
        )


def scripted(*values: float) -> Callable[[], float]:
    """
    A stand-in for C{random.random} that returns C{values} in order.
    """
    return iter(values).__next__


class PowerOfTwoTests(_EligibilityTestsMixin, SynchronousTestCase):
    """
    Tests for L{PowerOfTwo}.
    """

    @staticmethod
    def make_balancer() -> PowerOfTwo:
        """
        A balancer with a seeded random source, so the tests repeat exactly.
        """
        return PowerOfTwo(random=Random(0).random)

    def test_less_loaded_of_two_picked(self) -> None:
        """
        Of the two servers drawn, the one with fewer active connections is
        picked; a lighter server that was not drawn is not.
        """
        first, second, third = pool = [
            ServerState("10.0.0.1:80", active=3),
            ServerState("10.0.0.2:80", active=1),
            ServerState("10.0.0.3:80", active=0),
        ]
        # Each value draws from the servers not yet drawn: 0.0 the first of
        # them, 0.5 the second of two, 0.99 the last.
        self.assertIs(PowerOfTwo(random=scripted(0.0, 0.0)).pick(pool, KEYED), second)
        self.assertIs(PowerOfTwo(random=scripted(0.0, 0.5)).pick(pool, KEYED), third)
        self.assertIs(PowerOfTwo(random=scripted(0.99, 0.0)).pick(pool, KEYED), third)

    def test_draws_are_distinct(self) -> None:
        """
        The second draw is made among the servers the first did not take, so of
        two servers the lighter is picked whatever the draws.
        """
        busy, idle = pool = servers(2)
        busy.active = 1
        balancer = PowerOfTwo(random=scripted(0.0, 0.0, 0.9, 0.9))
        self.assertEqual(picks(balancer, pool, 2), [idle.address] * 2)

    def test_draws_weighted(self) -> None:
        """
        Each draw favours servers in proportion to their weight.
        """
        pool = [
            ServerState("10.0.0.1:80", weight=3),
            ServerState("10.0.0.2:80"),
            ServerState("10.0.0.3:80"),
        ]
        # Of a total weight of 5, the first server holds [0, 3), the second
        # [3, 4) and the third [4, 5). All are idle, so the first drawn wins.
        for value, expected in [(0.0, 0), (0.59, 0), (0.6, 1), (0.79, 1), (0.8, 2), (0.99, 2)]:
            balancer = PowerOfTwo(random=scripted(value, 0.0))
            self.assertIs(balancer.pick(pool, KEYED), pool[expected], value)

    def test_weighted_load_compared(self) -> None:
        """
        Loads are compared per unit of weight; on equal loads the first drawn
        wins.
        """
        big = ServerState("10.0.0.1:80", weight=4, active=3)
        small = ServerState("10.0.0.2:80", weight=1, active=1)
        self.assertIs(PowerOfTwo(random=scripted(0.9, 0.0)).pick([big, small], KEYED), big)
        big.active = 4
        self.assertIs(PowerOfTwo(random=scripted(0.9, 0.0)).pick([big, small], KEYED), small)
        self.assertIs(PowerOfTwo(random=scripted(0.0, 0.0)).pick([big, small], KEYED), big)

    def test_single_server_needs_no_draw(self) -> None:
        """
        One eligible server is picked without consulting the random source.
        """
        pool = servers(2)
        pool[1].status = ServerStatus.DOWN
        self.assertEqual(picks(PowerOfTwo(random=scripted()), pool, 3), [pool[0].address] * 3)


class BalancerForTests(SynchronousTestCase):
    """
    Tests for L{balancer_for}.
    """

    def test_names(self) -> None:
        """
        Each name in L{BALANCERS} gives a new balancer of its kind.
        """
        kinds = {
            "round_robin": RoundRobin,
            "least_connections": LeastConnections,
            "ip_hash": IPHash,
            "random": PowerOfTwo,
        }
        self.assertEqual(set(BALANCERS), set(kinds))
        for name, kind in kinds.items():
            balancer = balancer_for(name)
            self.assertIsInstance(balancer, kind)
            self.assertIsNot(balancer_for(name), balancer)

    def test_provider_passes_through(self) -> None:
        """
        An object providing L{IBalancer} is returned as it is.
        """
        balancer = LeastConnections()
        self.assertIs(balancer_for(balancer), balancer)

    def test_unknown_name(self) -> None:
        """
        An unknown name raises L{UnknownBalancer}, which carries the name and
        lists the known ones in its message.
        """
        error = self.assertRaises(UnknownBalancer, balancer_for, "fastest")
        self.assertEqual(error.name, "fastest")
        self.assertEqual(
            str(error),
            "unknown balancer 'fastest'; known balancers: "
            "ip_hash, least_connections, random, round_robin",
        )

    def test_non_provider_rejected(self) -> None:
        """
        An object that is neither a name nor an L{IBalancer} provider raises
        L{UnknownBalancer}.
        """
        spec = object()
        error = self.assertRaises(UnknownBalancer, balancer_for, spec)
        self.assertIs(error.name, spec)
