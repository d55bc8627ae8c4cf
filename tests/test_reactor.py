"""
Tests for L{txproxy.reactor}: Twisted's own reactor conformance tests, run on
L{ProxyReactor}, and what it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from select import EPOLLOUT
from typing import Any

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.test import test_core, test_fdset, test_tcp, test_time
from twisted.internet.test.reactormixins import ReactorBuilder
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from txproxy.reactor import ProxyReactor

PROXY_REACTOR = "txproxy.reactor.ProxyReactor"


def on_proxy_reactor(
    builder: type[ReactorBuilder], **replaced: Callable[..., None]
) -> dict[str, type[Any]]:
    """
    The test cases of one of Twisted's reactor test builders, for
    L{ProxyReactor} alone, with the tests in C{replaced} replaced.
    """
    only = type(
        builder.__name__,
        (builder,),
        {"_reactors": [PROXY_REACTOR], "__module__": __name__, **replaced},
    )
    return only.makeTestCaseClasses()


def test_lostFileDescriptor(self: SynchronousTestCase) -> None:
    """
    Twisted skips this test for L{EPollReactor} by its class name: closing a
    file descriptor takes it out of the epoll set without an event, so
    neither reactor can notice. L{ProxyReactor} inherits that.
    """
    raise SkipTest("epoll cannot detect lost file descriptors (as for EPollReactor)")


def test_logPrefix(self: ReactorBuilder) -> None:
    """
    Where Twisted's test checks that a legacy C{log.msg} inside
    C{dataReceived} carries the connection's log prefix as its C{system},
    L{ProxyReactor} does not push that context: the event says C{-}, as one
    logged outside any event does. (L{twisted.logger} events never read it.)
    """
    reactor = self.buildReactor()
    systems: list[str] = []

    class Logging(Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"x")

        def dataReceived(self, data: bytes) -> None:
            log.msg("in dataReceived")
            self.transport.loseConnection()

        def connectionLost(self, reason: Failure) -> None:
            reactor.stop()

    def observe(event: dict[str, Any]) -> None:
        if event.get("message") == ("in dataReceived",):
            systems.append(event["system"])

    log.addObserver(observe)
    self.addCleanup(log.removeObserver, observe)
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Logging))
    self.runReactor(reactor, timeout=5)
    self.assertEqual(systems, ["-"])


class Echo(Protocol):
    """
    Sends back what it gets.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


for _builder, _replaced in (
    (test_tcp.TCP4ClientTestsBuilder, {"test_logPrefix": test_logPrefix}),
    (test_tcp.TCPPortTestsBuilder, {}),
    (test_tcp.TCPConnectionTestsBuilder, {}),
    (test_tcp.TCPTransportTestsBuilder, {}),
    (test_tcp.AbortConnectionTests, {}),
    (test_fdset.ReactorFDSetTestsBuilder, {"test_lostFileDescriptor": test_lostFileDescriptor}),
    (test_core.SystemEventTestsBuilder, {}),
    (test_time.TimeTestsBuilder, {}),
):
    globals().update(on_proxy_reactor(_builder, **_replaced))
del _builder, _replaced


class ConnectionLostRaises(Protocol):
    """
    A protocol whose C{connectionLost} raises: the reactor must log it and go on.
    """

    def connectionLost(self, reason: Failure) -> None:
        raise ZeroDivisionError("connectionLost raised")


class ProxyReactorTests(ReactorBuilder):
    """
    What L{ProxyReactor} does differently from L{EPollReactor}.
    """

    _reactors = [PROXY_REACTOR]

    def test_interfaces(self) -> None:
        """
        L{ProxyReactor} is a full reactor.
        """
        reactor = self.buildReactor()
        for interface in (IReactorCore, IReactorFDSet, IReactorTCP, IReactorTime):
            self.assertTrue(verifyObject(interface, reactor))

    def test_failing_connection_lost_logged(self) -> None:
        """
        An exception from C{connectionLost}, which escapes C{_doReadOrWrite},
        is logged with the connection, and the reactor goes on to the
        next event.
        """
        reactor = self.buildReactor()
        logged: list[LogEvent] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.addCleanup(self.flushLoggedErrors, ZeroDivisionError)

        server_lost: list[Protocol] = []
        port = reactor.listenTCP(
            0, Factory.forProtocol(ConnectionLostRaises), interface="127.0.0.1"
        )

        class Closer(Protocol):
            def connectionMade(self) -> None:
                self.transport.loseConnection()

            def connectionLost(self, reason: Failure) -> None:
                server_lost.append(self)
                reactor.callLater(0.05, reactor.stop)

        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Closer))
        self.runReactor(reactor, timeout=5)
        self.assertEqual(len(server_lost), 1)
        failures = [
            e for e in logged if "log_failure" in e and e["log_failure"].check(ZeroDivisionError)
        ]
        self.assertIn("error handling an event", failures[0]["log_format"])

    def watch_writes(self, reactor: ProxyReactor) -> list[int]:
        """
        Record the file descriptors C{reactor} asks epoll to watch for writing.
        """
        watched: list[int] = []
        poller = reactor._poller

        class Recording:
            def __getattr__(self, name: str) -> Any:
                return getattr(poller, name)

            def register(self, fd: int, flags: int) -> None:
                if flags & EPOLLOUT:
                    watched.append(fd)
                poller.register(fd, flags)

            def modify(self, fd: int, flags: int) -> None:
                if flags & EPOLLOUT:
                    watched.append(fd)
                poller.modify(fd, flags)

        reactor._poller = Recording()
        return watched

    def test_write_sent_at_end_of_turn(self) -> None:
        """
        What a protocol writes goes out at the end of the reactor's turn,
        without epoll watching the socket for writing, when the socket takes it all.
        """
        reactor = self.buildReactor()
        watched = self.watch_writes(reactor)
        received: list[bytes] = []

        class Greeter(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"hello, ")
                self.transport.write(b"world")

        class Reader(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)
                if b"".join(received) == b"hello, world":
                    reactor.stop()

        port = reactor.listenTCP(0, Factory.forProtocol(Greeter), interface="127.0.0.1")
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Reader))
        self.runReactor(reactor, timeout=5)
        self.assertEqual(b"".join(received), b"hello, world")
        # The client's connect is the only wait for writability.
        self.assertLessEqual(len(watched), 1)

    def test_partial_write_waits_for_epoll(self) -> None:
        """
        A writer whose socket takes less than all it has is watched by epoll
        until it can send the rest; every byte arrives.
        """
        reactor = self.buildReactor()
        size = 32 * 1024 * 1024
        received: list[int] = []
        writers_while_paused: list[object] = []
        server: list[Protocol] = []

        class Flood(Protocol):
            def connectionMade(self) -> None:
                server.append(self)
                self.transport.write(b"x" * size)

        class Slow(Protocol):
            def connectionMade(self) -> None:
                self.transport.pauseProducing()
                reactor.callLater(0.2, self.resume)

            def resume(self) -> None:
                writers_while_paused.extend(reactor.getWriters())
                self.transport.resumeProducing()

            def dataReceived(self, data: bytes) -> None:
                received.append(len(data))
                if sum(received) == size:
                    reactor.stop()

        port = reactor.listenTCP(0, Factory.forProtocol(Flood), interface="127.0.0.1")
        reactor.connectTCP("127.0.0.1", port.getHost().port, ClientFactory.forProtocol(Slow))
        self.runReactor(reactor, timeout=10)
        self.assertEqual(sum(received), size)
        [flood] = server
        self.assertIn(flood.transport, writers_while_paused)
        self.assertNotIn(flood.transport, reactor.getWriters())


globals().update(ProxyReactorTests.makeTestCaseClasses())
del ProxyReactorTests


class InstallTests(SynchronousTestCase):
    """
    Tests for L{txproxy.reactor.install}.
    """

    def test_already_installed(self) -> None:
        """
        With a reactor installed (trial's here), C{install} refuses, as
        Twisted's own install functions do.
        """
        from twisted.internet.error import ReactorAlreadyInstalledError

        from txproxy.reactor import install

        self.assertRaises(ReactorAlreadyInstalledError, install)

    def test_subclass(self) -> None:
        """
        L{ProxyReactor} is Twisted's epoll reactor.
        """
        from twisted.internet.epollreactor import EPollReactor

        self.assertTrue(issubclass(ProxyReactor, EPollReactor))
