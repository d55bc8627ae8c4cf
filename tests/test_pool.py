"""
Tests for L{txproxy.pool}: server state, leases and the backup tier.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txproxy.balancing import RoundRobin
from txproxy.interfaces import IServerView, PickContext
from txproxy.pool import NoSuchServer, Pool, ServerState, ServerStatus


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
        for status in (ServerStatus.DOWN, ServerStatus.DRAINING):
            server.status = status
            self.assertFalse(server.available)

    def test_host_and_port(self) -> None:
        """
        The address splits into host and port, IPv6 brackets removed.
        """
        server = ServerState("[::1]:8080")
        self.assertEqual((server.host, server.port), ("::1", 8080))


class PoolTests(SynchronousTestCase):
    """
    Tests for L{Pool} and L{Lease}.
    """

    def test_lease_counts(self) -> None:
        """
        A lease counts the server active until released, and in its total.
        """
        pool = make_pool()
        lease = pool.lease(PickContext())
        assert lease is not None
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
        for failed in (True, True):
            lease = pool.lease(PickContext(exclude=frozenset({"10.0.0.2:80"})))
            assert lease is not None
            lease.release(failed=failed)
        self.assertEqual((server.fails, server.failures), (2, 2))
        lease = pool.lease(PickContext(exclude=frozenset({"10.0.0.2:80"})))
        assert lease is not None
        lease.release()
        self.assertEqual((server.fails, server.failures), (0, 2))

    def test_backup_only_without_primary(self) -> None:
        """
        The backup takes work only while no primary is up.
        """
        pool = make_pool()
        picked = set()
        for _ in range(4):
            lease = pool.lease(PickContext())
            assert lease is not None
            picked.add(lease.server.address)
        self.assertEqual(picked, {"10.0.0.1:80", "10.0.0.2:80"})
        pool.mark_down("10.0.0.1:80")
        pool.drain("10.0.0.2:80")
        lease = pool.lease(PickContext())
        assert lease is not None
        self.assertEqual(lease.server.address, "10.0.0.3:80")
        pool.mark_up("10.0.0.1:80")
        lease = pool.lease(PickContext())
        assert lease is not None
        self.assertEqual(lease.server.address, "10.0.0.1:80")

    def test_backup_after_primaries_tried(self) -> None:
        """
        A retry that has tried every primary goes to the backup.
        """
        pool = make_pool()
        lease = pool.lease(PickContext(exclude=frozenset({"10.0.0.1:80", "10.0.0.2:80"})))
        assert lease is not None
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
