"""
Real origins and raw clients on 127.0.0.1 for the integration tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IListeningPort, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txproxy import config
from txproxy.service import ProxyService, makeService


class EchoPage(Resource):
    """
    Answers with a JSON description of the request it got, for assertions:
    method, path, headers, body length, and the upstream connection's port.

    A few paths behave differently: C{/status/N} answers with status N,
    C{/bytes/N} streams N bytes, C{/slow} never answers, C{/server} sends a
    C{Server} and an C{X-Powered-By} header.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes | int:
        path = request.path.decode()
        body = request.content.read()
        if path.startswith("/status/"):
            request.setResponseCode(int(path.rsplit("/", 1)[1]))
            return b""
        if path.startswith("/bytes/"):
            return self._stream(request, int(path.rsplit("/", 1)[1]))
        if path == "/slow":
            return NOT_DONE_YET
        if path == "/server":
            request.setHeader(b"server", b"secret-backend/1.0")
            request.setHeader(b"x-powered-by", b"PHP/5")
        description = {
            "method": request.method.decode(),
            "uri": request.uri.decode(),
            "headers": [
                [name.decode(), value.decode()]
                for name, values in request.requestHeaders.getAllRawHeaders()
                for value in values
            ],
            "body_length": len(body),
            "connection": request.transport.getPeer().port,
        }
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(description).encode()

    def _stream(self, request: Request, size: int) -> int:
        chunk = b"y" * 65536

        class Producer:
            sent = 0

            def resumeProducing(self) -> None:
                if self.sent >= size:
                    request.unregisterProducer()
                    request.finish()
                    return
                piece = chunk[: min(len(chunk), size - self.sent)]
                self.sent += len(piece)
                request.write(piece)

            def pauseProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                self.sent = size

        request.setHeader(b"content-length", str(size).encode())
        request.registerProducer(Producer(), False)
        return NOT_DONE_YET


def start_origin(test_case: object) -> IListeningPort:
    """
    Start an L{EchoPage} origin on a free loopback port until the test ends.
    """
    site = Site(EchoPage())
    site.noisy = False
    site.log = lambda request: None
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    test_case.addCleanup(port.stopListening)  # type: ignore[attr-defined]
    return port


def start_proxy(test_case: object, configuration: config.Proxy) -> tuple[ProxyService, int]:
    """
    Build txproxy from C{configuration} as twistd does and start it until the
    test ends.

    @return: the service, and the port its first listener took.
    """
    service = makeService(configuration, reactor)
    assert isinstance(service, ProxyService)
    service.startService()
    test_case.addCleanup(service.stopService)  # type: ignore[attr-defined]
    port = service.listeners[0].port
    assert port is not None
    return service, port.getHost().port


def start_raw_origin(test_case: object, protocol: type[Protocol]) -> IListeningPort:
    """
    Start an origin speaking C{protocol} on a free loopback port until the test ends.
    """
    factory = Factory.forProtocol(protocol)
    factory.noisy = False
    factory.connections = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    test_case.addCleanup(port.stopListening)  # type: ignore[attr-defined]
    return port


class RawClient(Protocol):
    """
    A client that sends bytes as given and collects every byte it receives.

    C{closed} fires with all received bytes when the connection closes;
    C{wait_for(marker, count)} fires once C{marker} was received C{count} times.
    """

    def __init__(self) -> None:
        self._received = bytearray()
        self.closed: Deferred[bytes] = Deferred()
        self._waiting: list[tuple[bytes, int, Deferred[bytes]]] = []

    @property
    def received(self) -> bytes:
        """
        Every byte received so far.
        """
        return bytes(self._received)

    def dataReceived(self, data: bytes) -> None:
        self._received += data
        if not self._waiting:
            return
        still = []
        for marker, count, waiter in self._waiting:
            if self._received.count(marker) >= count:
                waiter.callback(self.received)
            else:
                still.append((marker, count, waiter))
        self._waiting = still

    def wait_for(self, marker: bytes, count: int = 1) -> Deferred[bytes]:
        waiter: Deferred[bytes] = Deferred()
        if self.received.count(marker) >= count:
            waiter.callback(self.received)
        else:
            self._waiting.append((marker, count, waiter))
        return waiter

    def connectionLost(self, reason: Failure) -> None:
        for _, _, waiter in self._waiting:
            waiter.callback(self.received)
        self._waiting = []
        self.closed.callback(self.received)


def connect_raw(port: int) -> Deferred[RawClient]:
    """
    Connect a L{RawClient} to C{port} on 127.0.0.1.
    """
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(RawClient))


def split_response(data: bytes) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """
    Split one raw HTTP/1.1 response into its status, headers (lower-case
    names) and the bytes after its head.
    """
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, headers, rest


class Pump:
    """
    A push producer that writes C{total} bytes to a transport as fast as it
    takes them, then calls C{done}.

    @ivar sent: the bytes written so far.
    """

    def __init__(
        self, transport: ITransport, total: int, done: Callable[[], None] = lambda: None
    ) -> None:
        self.transport = transport
        self.total = total
        self.done = done
        self.sent = 0
        self.paused = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        chunk = b"z" * 65536
        while not self.paused and self.sent < self.total:
            self.transport.write(chunk)
            self.sent += len(chunk)
        if self.sent >= self.total and not self.paused:
            self.transport.unregisterProducer()
            self.done()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True


def buffered(transport: object) -> int:
    """
    The bytes a Twisted TCP transport holds in memory, waiting for the socket.
    """
    # FileDescriptor's buffer: written data not yet handed to the kernel.
    return (
        len(transport.dataBuffer)  # type: ignore[attr-defined]
        - transport.offset  # type: ignore[attr-defined]
        + transport._tempDataLen  # type: ignore[attr-defined]
    )


@inlineCallbacks
def stalled(progress: Callable[[], int]) -> Generator[Deferred[None], None, int]:
    """
    Wait, at most ten seconds, until C{progress()} has not grown for four
    looks 50 ms apart; return its last value.
    """
    last, steady = -1, 0
    for _ in range(200):
        yield deferLater(reactor, 0.05)
        now = progress()
        steady = steady + 1 if now == last else 0
        last = now
        if steady >= 4:
            return last
    raise AssertionError("never stalled")
