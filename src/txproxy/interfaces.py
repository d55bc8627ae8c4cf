# -*- test-case-name: tests.test_interfaces -*-
"""
The zope.interface contracts between txproxy's parts, and the values they exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from attrs import frozen
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.application.service import IService


@frozen
class PickContext:
    """
    What a balancer may know about the connection or request being placed.

    @ivar client: the address of the client that connected to the listener.
    @ivar hash_key: the input of affinity balancers such as C{ip_hash}; L{None}
        when the request has no affinity.
    @ivar exclude: addresses (C{host:port}) already tried for this connection
        or request, which a retry must not pick again.
    """

    client: IAddress | None = None
    hash_key: bytes | None = None
    exclude: frozenset[str] = frozenset()


class IServerView(Interface):
    """
    What a balancer sees of one server: its identity, its weight and its load.
    """

    address: str = Attribute("The server's C{host:port} string, unique within its pool.")
    weight: int = Attribute("The configured weight, an integer of at least 1.")
    active: int = Attribute("The number of connections or requests now in flight to it.")
    available: bool = Attribute("C{True} while the server may be given new work.")


class IBalancer(Interface):
    """
    Picks one server of a pool for one connection or request.

    A pick is pure and synchronous: it looks at the servers it is given and at
    its own bookkeeping, and costs O(servers). Each pool has its own balancer.
    """

    def pick(servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        Choose a server for one connection or request.

        @param servers: one tier of the pool (the primaries, or the backups when
            no primary is available), in configuration order. The balancer skips
            those that are not C{available} or whose address is in
            C{context.exclude}.
        @param context: what is known of the connection or request.
        @return: the chosen server, or L{None} when none may be chosen (the
            caller then answers that no server is available).
        """


class IPoolObserver(Interface):
    """
    Learns what happens to the servers of a pool: how each lease ended, and
    which servers join and leave.

    It is the seam through which passive health checks (and metrics) see real
    traffic without the protocols that lease servers knowing of them. A pool
    calls its observers synchronously, once per lease on the hot path, so an
    observer does little and never raises.
    """

    def server_released(server: IServerView, failed: bool, status: int | None) -> None:
        """
        A lease on C{server} ended.

        @param failed: whether the server could not be reached, reset the
            connection, timed out or sent a broken response.
        @param status: the status of the server's HTTP response, if it sent one
            and the protocol said so; L{None} otherwise.
        """

    def server_added(server: IServerView) -> None:
        """
        C{server} joined the pool.
        """

    def server_removed(server: IServerView) -> None:
        """
        C{server} left the pool, its last lease released.
        """


class IServiceFactory(Interface):
    """
    Makes a service that txproxy runs beside its listeners, in the same process.

    A configuration lists these in C{Proxy(services=[...])}: the default
    configuration uses it to start its demo origins, and users to run their own
    Twisted services next to the proxy.
    """

    def make_service(reactor: IReactorCore) -> IService:
        """
        Build the service; txproxy starts and stops it with its own.

        @param reactor: the reactor the service must use.
        """


class IProxyReactor(IReactorCore, IReactorTCP, IReactorTime):
    """
    The reactor txproxy runs on: it connects to servers, times connections and
    starts the services beside the listeners.

    For annotations only: Twisted's reactors provide each of these interfaces,
    not this one by name.
    """


class IProxyTransport(ITCPTransport, IConsumer, IPushProducer):
    """
    The transport of a TCP connection as txproxy uses it: it half-closes,
    takes a producer and is itself paused and resumed as one.

    For annotations only: Twisted's TCP transports provide each of these
    interfaces, not this one by name.
    """

    disconnecting: bool = Attribute("C{True} once C{loseConnection} was called.")


class ICachePurge(Interface):
    """
    Removes stored responses from txproxy's HTTP cache, for C{DELETE /cache}.

    The cache provides it; L{txproxy.admin.AdminAPI} takes one or L{None} when no route
    caches. The admin API has checked that exactly one of C{url} and
    C{prefix} was given and that it is an absolute C{http} or C{https} URL
    (or the start of one, for C{prefix}).
    """

    def purge_url(url: str) -> int:  # noqa: N805
        """
        Remove every response stored for one absolute URL, all its variants.

        @return: how many stored responses were removed.
        @raise ValueError: when the cache cannot take C{url}; the message is
            answered with 400.
        @raise LookupError: when no route caches now; answered with 404.
        """

    def purge_prefix(prefix: str) -> int:  # noqa: N805
        """
        Remove every response stored for an absolute URL starting with C{prefix}.

        @return: how many stored responses were removed.
        @raise ValueError: when the cache cannot take C{prefix}; the message
            is answered with 400.
        @raise LookupError: when no route caches now; answered with 404.
        """
