# -*- test-case-name: tests.test_tcp -*-
"""
TCP passthrough: relay bytes between a client and a server of a pool, both ways.
"""

from __future__ import annotations

from typing import cast

from attrs import evolve
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy.endpoints import connect_upstream
from txproxy.interfaces import IProxyReactor, IProxyTransport, PickContext
from txproxy.pool import Lease, Pool


def client_hash_key(address: IAddress) -> bytes | None:
    """
    The affinity key of a client: its IP address, for C{ip_hash}.
    """
    host = getattr(address, "host", None)
    return host.encode("ascii") if isinstance(host, str) else None


@implementer(IHalfCloseableProtocol)
class RelayEnd(Protocol):
    """
    One end of a relay: what it reads, its peer writes.

    A half-close passes through: when this end reads EOF its peer stops
    writing, and once both ends have read EOF both connections close.
    """

    # Set by makeConnection before any other method is called.
    transport: IProxyTransport
    peer: RelayEnd | None = None
    read_closed = False

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def readConnectionLost(self) -> None:
        self.read_closed = True
        if self.peer is None or self.peer.transport is None:
            return
        if self.peer.read_closed:
            self.transport.loseConnection()
            self.peer.transport.loseConnection()
        else:
            self.peer.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing to do: our peer told us it will send no more.
        """

    def join(self, peer: RelayEnd) -> None:
        """
        Make C{peer} the other end, and let each side's transport pause the
        other's when its write buffer is full.
        """
        assert self.transport is not None and peer.transport is not None
        self.peer, peer.peer = peer, self
        self.transport.registerProducer(peer.transport, True)
        peer.transport.registerProducer(self.transport, True)


class UpstreamRelay(RelayEnd):
    """
    The server side of a relay.
    """

    def dataReceived(self, data: bytes) -> None:
        assert isinstance(self.peer, Relay)
        self.peer.touch()
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if isinstance(self.peer, Relay):
            self.peer.upstream_lost()


class Relay(RelayEnd):
    """
    The client side of a relay: holds the client still until a server of the
    pool accepts, trying the next server when one cannot be reached.

    @ivar factory: the L{RelayFactory} that made this protocol.
    """

    _log = Logger()

    factory: RelayFactory

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._lease: Lease | None = None
        self._connecting: Deferred[UpstreamRelay] | None = None
        self._context = PickContext()
        self._tried: frozenset[str] = frozenset()
        self._last_activity = 0.0
        self._idle_call: IDelayedCall | None = None
        self._gone = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.factory.relays.add(self)
        self.transport.pauseProducing()
        peer = self.transport.getPeer()
        self._context = PickContext(client=peer, hash_key=client_hash_key(peer))
        self._last_activity = self.factory.reactor.seconds()
        self._idle_call = self.factory.reactor.callLater(
            self.factory.idle_timeout, self._check_idle
        )
        self._connect()

    def _connect(self) -> None:
        assert self.transport is not None
        factory = self.factory
        context = self._context
        if self._tried:
            context = evolve(context, exclude=self._tried)
        self._lease = factory.pool.lease(context)
        if self._lease is None:
            self._log.warn(
                "no server of pool {pool} available for client {client}; closing",
                pool=factory.pool.name,
                client=self._context.client,
            )
            self.transport.loseConnection()
            return
        server = self._lease.server
        self._tried |= {server.address}
        self._connecting = cast(
            "Deferred[UpstreamRelay]",
            connect_upstream(factory.reactor, server, _UpstreamFactory(), factory.connect_timeout),
        )
        self._connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, upstream: UpstreamRelay) -> None:
        assert self.transport is not None
        self._connecting = None
        self.join(upstream)
        upstream.transport.writeSequence(self._pending)
        del self._pending[:]
        if self.read_closed:
            upstream.transport.loseWriteConnection()
        self.transport.resumeProducing()

    def _connect_failed(self, reason: Failure) -> None:
        self._connecting = None
        assert self._lease is not None and self.transport is not None
        if self._gone:
            self._lease.release()
            return
        server = self._lease.server
        self._lease.release(failed=True)
        self._log.warn(
            "connect to server {server} of pool {pool} failed: {reason}",
            server=server.address,
            pool=self.factory.pool.name,
            reason=reason.getErrorMessage(),
        )
        tries = len(self._tried)
        if tries <= self.factory.retries:
            self._connect()
        else:
            self._log.warn(
                "no server of pool {pool} reachable for client {client} after {tries} tries; "
                "closing",
                pool=self.factory.pool.name,
                client=self._context.client,
                tries=tries,
            )
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.touch()
        if self.peer is None:
            self._pending.append(data)
        else:
            super().dataReceived(data)

    def touch(self) -> None:
        """
        Note traffic in either direction, which keeps the relay from idling out.
        """
        self._last_activity = self.factory.reactor.seconds()

    def _check_idle(self) -> None:
        idle = self.factory.reactor.seconds() - self._last_activity
        if idle < self.factory.idle_timeout:
            self._idle_call = self.factory.reactor.callLater(
                self.factory.idle_timeout - idle, self._check_idle
            )
            return
        self._idle_call = None
        self._log.debug("closing relay idle for {idle:.1f}s", idle=idle)
        self.close()

    def close(self) -> None:
        """
        Close both connections, once what each has buffered is written.
        """
        assert self.transport is not None
        self.transport.loseConnection()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()

    def upstream_lost(self) -> None:
        """
        The server's connection is gone: give the server back and close the client.
        """
        if self._lease is not None:
            self._lease.release()
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._gone = True
        self.factory.relay_ended(self)
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if self._connecting is not None:
            self._connecting.cancel()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _UpstreamFactory(Factory[UpstreamRelay]):
    protocol = UpstreamRelay
    noisy = False


class RelayFactory(Factory[Relay]):
    """
    Makes a L{Relay} for each client of a TCP listener.

    @ivar pool: the pool whose servers take the connections.
    @ivar reactor: the reactor to connect and time with.
    @ivar connect_timeout: seconds to wait for one server to accept.
    @ivar idle_timeout: seconds without traffic either way before both
        connections are closed.
    @ivar retries: how many other servers to try after a failed connect.
    @ivar relays: the relays whose client is connected.
    """

    protocol = Relay
    noisy = False

    def __init__(
        self,
        pool: Pool,
        reactor: IProxyReactor,
        connect_timeout: float,
        idle_timeout: float,
        retries: int,
    ) -> None:
        self.pool = pool
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.retries = retries
        self.relays: set[Relay] = set()
        self._all_closed: list[Deferred[None]] = []

    def relay_ended(self, relay: Relay) -> None:
        """
        Forget a relay whose client connection is gone.
        """
        self.relays.discard(relay)
        if not self.relays:
            waiting, self._all_closed = self._all_closed, []
            for closed in waiting:
                closed.callback(None)

    def close_connections(self) -> Deferred[None]:
        """
        Close every relay, both ends.

        @return: a L{Deferred} that fires once every client connection is gone.
        """
        if not self.relays:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._all_closed.append(closed)
        for relay in list(self.relays):
            relay.close()
        return closed
