# -*- test-case-name: tests.test_pool -*-
"""
The runtime state of pools and their servers: who is up, who is busy, who failed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

from attrs import define, field
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from txproxy.interfaces import IBalancer, IServerView, PickContext


class ServerStatus(enum.Enum):
    """
    Whether a server may be given new work.

    UP servers take new work; DOWN servers failed their checks; DRAINING
    servers finish what they have but take nothing new.
    """

    UP = "up"
    DOWN = "down"
    DRAINING = "draining"


@implementer(IServerView)
@define(eq=False)
class ServerState:
    """
    One server of a pool as it is now, apart from its immutable configuration.

    Only L{Pool} changes these counters; balancers and the admin pages read them.

    @ivar address: C{host:port}, unique within the pool.
    @ivar weight: the configured weight (at least 1).
    @ivar backup: whether the server only takes work while no primary is up.
    @ivar max_connections: the most connections it may have at once, or L{None}.
    @ivar status: UP, DOWN or DRAINING.
    @ivar active: connections or requests now in flight.
    @ivar total: connections or requests ever given to it.
    @ivar fails: consecutive failures on real traffic since the last success.
    @ivar failures: failures on real traffic ever.
    @ivar tls: how to speak TLS to it, or L{None} for plain TCP.
    """

    address: str
    weight: int = 1
    backup: bool = False
    max_connections: int | None = None
    tls: IOpenSSLClientConnectionCreator | None = None
    status: ServerStatus = ServerStatus.UP
    active: int = 0
    total: int = 0
    fails: int = 0
    failures: int = 0

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

    def release(self, failed: bool = False) -> None:
        """
        Give the server back to the pool.

        @param failed: C{True} when the server could not be reached or broke
            the connection: the failure is counted against it.
        """
        if self._released:
            return
        self._released = True
        self.pool._release(self.server, failed)


class NoSuchServer(KeyError):
    """
    A pool was asked about an address that is not one of its servers.
    """


class Pool:
    """
    A named group of servers with one balancer.

    The pool picks the tier (primaries while one is up, else the backups), asks
    its balancer for a server, and keeps the per-server counters.
    """

    def __init__(self, name: str, servers: Iterable[ServerState], balancer: IBalancer) -> None:
        self.name = name
        self.balancer = balancer
        self._servers = list(servers)
        self._primaries = [server for server in self._servers if not server.backup]
        self._backups = [server for server in self._servers if server.backup]

    @property
    def servers(self) -> Sequence[ServerState]:
        """
        Every server of the pool, in configuration order.
        """
        return tuple(self._servers)

    def server(self, address: str) -> ServerState:
        """
        Find a server by its address.

        @raise NoSuchServer: when no server of this pool has that address.
        """
        for server in self._servers:
            if server.address == address:
                return server
        raise NoSuchServer(address)

    def lease(self, context: PickContext) -> Lease | None:
        """
        Lend a server to one connection or request.

        @return: the lease, or L{None} when no server may take the work.
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

    def _release(self, server: ServerState, failed: bool) -> None:
        server.active -= 1
        if failed:
            server.fails += 1
            server.failures += 1
        else:
            server.fails = 0

    def mark_up(self, address: str) -> None:
        """
        Let a server take new work again.
        """
        self.server(address).status = ServerStatus.UP

    def mark_down(self, address: str) -> None:
        """
        Stop giving a failed server new work.
        """
        self.server(address).status = ServerStatus.DOWN

    def drain(self, address: str) -> None:
        """
        Let a server finish its work in flight but give it nothing new.
        """
        self.server(address).status = ServerStatus.DRAINING
