# -*- test-case-name: tests.test_connections -*-
"""
The connections a listener has open, and whoever waits until none is.
"""

from __future__ import annotations

from typing import TypeVar

from twisted.internet.defer import Deferred, succeed

_T = TypeVar("_T")


class Connections(set[_T]):
    """
    A set of open connections that says when it is empty: a stopping
    listener closes its connections, then waits on L{emptied}.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[Deferred[None]] = []

    def discard(self, connection: object) -> None:
        """
        Forget a connection that closed; if it was the last, fire every
        L{emptied} waiting.
        """
        super().discard(connection)
        if not self and self._waiting:
            waiting, self._waiting = self._waiting, []
            for emptied in waiting:
                emptied.callback(None)

    def emptied(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once no connection is left: at once when
        none is open now.
        """
        if not self:
            return succeed(None)
        emptied: Deferred[None] = Deferred()
        self._waiting.append(emptied)
        return emptied
