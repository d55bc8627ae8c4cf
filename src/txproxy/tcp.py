# -*- test-case-name: tests.test_tcp -*-
"""
TCP passthrough: relay bytes between a client and a server of a pool, both ways.

A listener with SNI routes first reads the client's TLS ClientHello to pick
the pool (L{SNIRelay}); the bytes relayed are the same either way.
"""

from __future__ import annotations

from typing import cast

from attrs import evolve, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txproxy.clienthello import ClientHello, ClientHelloReader, NeedMore, SNIRoutes
from txproxy.connections import Connections
from txproxy.endpoints import connect_upstream
from txproxy.interfaces import IProxyReactor, IProxyTransport, PickContext
from txproxy.pool import Lease, Pool, Unavailable


def client_hash_key(address: IAddress) -> bytes | None:
    """
    The affinity key of a client: its IP address, for C{ip_hash}.
    """
    host = getattr(address, "host", None)
    return host.encode("ascii") if isinstance(host, str) else None


@frozen
class RelayTarget:
    """
    A pool a relay may send its client to, and how hard to try.

    @ivar pool: the pool.
    @ivar retries: how many other servers of it to try after a failed connect.
    """

    pool: Pool
    retries: int


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
    listener's pool accepts, trying the next server when one cannot be reached.

    @ivar factory: the L{RelayFactory} that made this protocol.
    """

    _log = Logger()

    factory: RelayFactory

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._target: RelayTarget | None = None
        self._lease: Lease | None = None
        self._connecting: Deferred[UpstreamRelay] | None = None
        self._waiting: Deferred[Lease] | None = None
        self._context = PickContext()
        self._tried: frozenset[str] = frozenset()
        self._last_activity = 0.0
        self._idle_call: IDelayedCall | None = None
        self._gone = False

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.factory.relays.add(self)
        peer = self.transport.getPeer()
        self._context = PickContext(client=peer, hash_key=client_hash_key(peer))
        self._last_activity = self.factory.reactor.seconds()
        self._idle_call = self.factory.reactor.callLater(
            self.factory.idle_timeout, self._check_idle
        )
        self._start()

    def _start(self) -> None:
        """
        Send the client to the listener's pool.
        """
        self._relay_to(self.factory.default)

    def _relay_to(self, target: RelayTarget | None) -> None:
        """
        Hold the client still and connect to a server of C{target}.

        @param target: the pool, or L{None} for none: the client is closed.
        """
        assert self.transport is not None
        self.transport.pauseProducing()
        if target is None:
            self.transport.loseConnection()
            return
        self._target = target
        self._connect()

    def _connect(self) -> None:
        assert self.transport is not None and self._target is not None
        pool = self._target.pool
        context = self._context
        if self._tried:
            context = evolve(context, exclude=self._tried)
        lease = pool.lease(context)
        if lease is not None:
            self._leased(lease)
        elif not self._tried and pool.queue_size:
            # Every server is at its max_connections: wait in the pool's queue.
            self._waiting = pool.wait(context)
            self._waiting.addCallbacks(self._leased, self._wait_failed)
        else:
            self._unavailable("no server available")

    def _unavailable(self, reason: str) -> None:
        assert self.transport is not None and self._target is not None
        self._log.warn(
            "{reason} in pool {pool} for client {client}; closing",
            reason=reason,
            pool=self._target.pool.name,
            client=self._context.client,
        )
        self.transport.loseConnection()

    def _wait_failed(self, reason: Failure) -> None:
        self._waiting = None
        if reason.check(Unavailable):  # type: ignore[no-untyped-call]
            self._unavailable(str(reason.value))
        else:
            reason.trap(CancelledError)  # type: ignore[no-untyped-call]

    def _leased(self, lease: Lease) -> None:
        self._waiting = None
        self._lease = lease
        factory = self.factory
        server = lease.server
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
        assert self._target is not None
        if self._gone:
            self._lease.release()
            return
        server = self._lease.server
        self._lease.release(failed=True)
        self._log.warn(
            "connect to server {server} of pool {pool} failed: {reason}",
            server=server.address,
            pool=self._target.pool.name,
            reason=reason.getErrorMessage(),
        )
        tries = len(self._tried)
        if tries <= self._target.retries:
            self._connect()
        else:
            self._log.warn(
                "no server of pool {pool} reachable for client {client} after {tries} tries; "
                "closing",
                pool=self._target.pool.name,
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

    def go_away(self) -> None:
        """
        The listener is stopping: nothing to do, as a relay goes on until
        either side closes it, or L{abort}.
        """

    def abort(self) -> None:
        """
        Cut both connections at once, dropping what they have buffered: a
        stopping listener's drain time is over.
        """
        assert self.transport is not None
        self.transport.abortConnection()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.abortConnection()

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
        if self._waiting is not None:
            self._waiting.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class SNIRelay(Relay):
    """
    The client side of a relay whose pool the client's TLS server name picks.

    It reads the client until its ClientHello is whole, or shown not to be
    one, keeping every byte; then picks the pool of the SNI route that the
    name matches, else the listener's pool, and goes on as L{Relay}: the
    server gets every byte, the ClientHello first, and TLS stays end to end.
    A client closed for want of a pool is logged at info level with its
    C{client} address and the C{name} it asked for.

    Reading is bounded in bytes by L{ClientHelloReader}, and in time by the
    factory's C{hello_timeout}: a client that has not sent a whole ClientHello
    by then (one that sends nothing, or trickles) is closed.
    """

    def __init__(self) -> None:
        super().__init__()
        self._reader: ClientHelloReader | None = ClientHelloReader()
        self._hello_call: IDelayedCall | None = None

    def _start(self) -> None:
        """
        Read the ClientHello before choosing a pool, for C{hello_timeout} seconds at most.
        """
        assert self.factory.hello_timeout is not None
        self._hello_call = self.factory.reactor.callLater(
            self.factory.hello_timeout, self._hello_timed_out
        )

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:
            super().dataReceived(data)
            return
        self.touch()
        self._pending.append(data)
        result = reader.feed(data)
        if isinstance(result, NeedMore):
            return
        if isinstance(result, ClientHello):
            name = result.server_name
            self._route(name, "no SNI" if name is None else "no SNI route matched")
        else:
            self._route(None, result.reason)

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        if self._reader is not None:
            # The client is done sending: what it sent is all it will be.
            self._route(None, "closed before a whole ClientHello")

    def _route(self, name: str | None, reason: str) -> None:
        """
        Stop reading the ClientHello and send the client to the pool of its server name.

        @param name: the server name the client asked for, or L{None} for none.
        @param reason: why the listener's pool may be used, for logs.
        """
        self._stop_reading_hello()
        factory = self.factory
        assert factory.sni_routes is not None
        target = None if name is None else factory.sni_routes.pool_for(name)
        if target is None:
            target = factory.default
            if target is None:
                self._log.info(
                    "no pool for client {client} asking for server name {name} ({reason}); closing",
                    client=self._context.client,
                    name=name,
                    reason=reason,
                )
        self._relay_to(target)

    def go_away(self) -> None:
        """
        The listener is stopping: a client still sending its ClientHello is
        closed at once, as no server has it yet; one relayed goes on.
        """
        if self._reader is not None:
            self._stop_reading_hello()
            assert self.transport is not None
            self.transport.loseConnection()

    def _hello_timed_out(self) -> None:
        self._hello_call = None
        self._stop_reading_hello()
        self._log.debug(
            "client {client} sent no whole ClientHello in {timeout}s; closing",
            client=self._context.client,
            timeout=self.factory.hello_timeout,
        )
        assert self.transport is not None
        self.transport.loseConnection()

    def _stop_reading_hello(self) -> None:
        """
        Forget the reader and its timer: what the client sends next is relayed.
        """
        self._reader = None
        if self._hello_call is not None and self._hello_call.active():
            self._hello_call.cancel()
        self._hello_call = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_reading_hello()
        super().connectionLost(reason)


class _UpstreamFactory(Factory[UpstreamRelay]):
    protocol = UpstreamRelay
    noisy = False


class RelayFactory(Factory[Relay]):
    """
    Makes a L{Relay} for each client of a TCP listener, or an L{SNIRelay}
    when the listener has SNI routes.

    Without SNI routes a relay connects at once and its reads cost nothing
    more than a write; only SNI routes make relays read before connecting.

    @ivar default: the listener's pool, which takes the clients that no SNI
        route takes, or L{None} to close them.
    @ivar sni_routes: the pools of TLS server names, or L{None} for none.
    @ivar hello_timeout: with SNI routes, seconds a client may take to send
        its whole ClientHello.
    @ivar reactor: the reactor to connect and time with.
    @ivar connect_timeout: seconds to wait for one server to accept.
    @ivar idle_timeout: seconds without traffic either way before both
        connections are closed.
    @ivar relays: the relays whose client is connected.
    """

    protocol: type[Relay] = Relay
    noisy = False

    def __init__(
        self,
        pool: Pool | None,
        reactor: IProxyReactor,
        connect_timeout: float,
        idle_timeout: float,
        retries: int,
        *,
        sni_routes: SNIRoutes[RelayTarget] | None = None,
        hello_timeout: float | None = None,
    ) -> None:
        """
        @param pool: the listener's pool, or L{None} when SNI routes take every
            client they can and the rest are closed.
        @param retries: how many other servers of C{pool} to try after a
            failed connect (each SNI route's target says its own).
        @raise ValueError: for neither a pool nor SNI routes, or SNI routes
            without a C{hello_timeout}.
        """
        self.reactor = reactor
        self.relays: Connections[Relay] = Connections()
        self.configure(
            pool,
            connect_timeout,
            idle_timeout,
            retries,
            sni_routes=sni_routes,
            hello_timeout=hello_timeout,
        )

    def configure(
        self,
        pool: Pool | None,
        connect_timeout: float,
        idle_timeout: float,
        retries: int,
        *,
        sni_routes: SNIRoutes[RelayTarget] | None = None,
        hello_timeout: float | None = None,
    ) -> None:
        """
        Take a listener's settings, as at start and on each reload: they
        apply to clients from now on, and the relays open keep going, each
        with the pool it has and the new C{idle_timeout}.

        The parameters are those of the constructor.

        @raise ValueError: as the constructor does; nothing changes then.
        """
        if pool is None and not sni_routes:
            raise ValueError("a relay needs a pool or SNI routes")
        if sni_routes and hello_timeout is None:
            raise ValueError("SNI routes need a hello_timeout")
        self.default = None if pool is None else RelayTarget(pool, retries)
        self.sni_routes = sni_routes if sni_routes else None
        self.hello_timeout = hello_timeout
        self.protocol = Relay if self.sni_routes is None else SNIRelay
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout

    def relay_ended(self, relay: Relay) -> None:
        """
        Forget a relay whose client connection is gone.
        """
        self.relays.discard(relay)

    def close_connections(self) -> Deferred[None]:
        """
        Let every relay finish, as a stopping listener does: relays go on
        until either side closes them (or L{abort_connections}); only
        clients still sending their ClientHello are closed at once.

        @return: a L{Deferred} that fires once every client connection is gone.
        """
        emptied = self.relays.emptied()
        for relay in list(self.relays):
            relay.go_away()
        return emptied

    def abort_connections(self) -> None:
        """
        Cut every relay at once, both ends: a stopping listener's drain time is over.
        """
        for relay in list(self.relays):
            relay.abort()
