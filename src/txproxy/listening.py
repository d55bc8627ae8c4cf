# -*- test-case-name: tests.test_service -*-
"""
Listeners as services: listen on one endpoint while running, and stop gracefully.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from txproxy.http.listener import HTTPFactory
from txproxy.interfaces import IProxyReactor
from txproxy.reload import Listener
from txproxy.tcp import RelayFactory
from txproxy.tls import ServerTLS

if TYPE_CHECKING:
    # The admin API needs twisted.web, loaded only where a configuration has one.
    from txproxy.admin import AdminSite

ListenerFactory = Union[RelayFactory, HTTPFactory, "AdminSite"]
"""
The factories a listener may serve with: each can close its connections.
"""

DRAIN_TIMEOUT = 30.0
"""
The seconds a stopping listener lets its connections finish, unless told
otherwise: the default of C{Proxy(drain_timeout=)}.
"""


class ListenerService(Service):
    """
    Listens on one endpoint while running, and says where.

    Stopping is graceful: the port closes, the factory closes its
    connections as each finishes (an HTTP request in flight is answered; a
    TCP relay goes on until either side closes it), and those still open
    after C{drain_timeout} seconds are cut.

    @ivar port: the listening port while running, else L{None}.
    @ivar description: the endpoint string from the configuration.
    @ivar listener: the listener's configuration, or L{None} for a listener
        of txproxy's own (the admin endpoint).
    @ivar drain_timeout: the seconds its connections may take to finish once
        it stops.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IProxyReactor,
        description: str,
        factory: ListenerFactory,
        summary: str,
        tls: ServerTLS | None = None,
        *,
        listener: Listener | None = None,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        """
        @param tls: the TLS the listener terminates, or L{None}.
        """
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.summary = summary
        self.tls = tls
        self.listener = listener
        self.drain_timeout = drain_timeout
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        # Bind while still privileged (ports below 1024), as twistd expects;
        # a bind failure propagates and stops start-up before anything serves.
        super().privilegedStartService()  # type: ignore[no-untyped-call]
        endpoint = serverFromString(self.reactor, self.description)  # type: ignore[no-untyped-call]
        factory: IProtocolFactory = self.factory
        if self.tls is not None:
            factory = TLSMemoryBIOFactory(self.tls, False, factory)
        failures: list[Failure] = []
        endpoint.listen(factory).addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        self._log.info(
            "listener {endpoint} ready on {host}:{port}: {summary}",
            endpoint=self.description,
            host=getattr(address, "host", address),
            port=getattr(address, "port", ""),
            summary=self.summary,
        )
        if isinstance(self.factory, HTTPFactory):
            self._log.info(
                "try: curl {insecure}{scheme}://{host}:{port}/",
                insecure="-k " if self.tls is not None else "",
                scheme="https" if self.tls is not None else "http",
                host=getattr(address, "host", address),
                port=getattr(address, "port", ""),
            )

    def startService(self) -> None:
        if self.port is None:
            self.privilegedStartService()
        super().startService()  # type: ignore[no-untyped-call]

    def stop_listening(self) -> Deferred[None]:
        """
        Close the port, keeping the connections it accepted.

        @return: fires once the port is closed, so that another listener may
            take it.
        """
        port, self.port = self.port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)

    def close_connections(self) -> Deferred[None]:
        """
        Close the connections gracefully, and cut those still open after
        C{drain_timeout} seconds.

        @return: fires once every connection is gone.
        """
        closed = self.factory.close_connections()
        if closed.called:
            return closed
        timer = self.reactor.callLater(self.drain_timeout, self._drain_over)

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return closed.addBoth(done)

    def _drain_over(self) -> None:
        """
        The drain time is over: cut what is still open.
        """
        factory = self.factory
        self._log.warn(
            "listener {endpoint}: connections still open after {timeout:g}s of draining are cut",
            endpoint=self.description,
            timeout=self.drain_timeout,
        )
        if isinstance(factory, HTTPFactory | RelayFactory):
            factory.abort_connections()

    def stopService(self) -> Deferred[None]:
        """
        Stop listening, then close the connections gracefully (see L{close_connections}).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop_listening().addCallback(lambda _: self.close_connections())
