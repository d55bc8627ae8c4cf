"""
Tests for L{txproxy.connections}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txproxy.connections import Connections


class ConnectionsTests(SynchronousTestCase):
    """
    L{Connections} is a set that says when it is empty.
    """

    def test_empty_at_once(self) -> None:
        """
        With no connection open, L{Connections.emptied} has already fired.
        """
        self.assertIsNone(self.successResultOf(Connections[object]().emptied()))

    def test_fires_when_last_leaves(self) -> None:
        """
        Every waiter fires once the last connection is discarded, not before;
        discarding one never held changes nothing.
        """
        connections: Connections[str] = Connections()
        connections.update({"a", "b"})
        first, second = connections.emptied(), connections.emptied()
        connections.discard("a")
        connections.discard("c")
        self.assertNoResult(first)
        connections.discard("b")
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertEqual(connections, set())
