"""
An HTTP/2 client over h2 for the integration tests: streams, flow control and GOAWAY by hand.
"""

from __future__ import annotations

from collections import deque

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

# RFC 9113 4.1: every frame starts with a 9-byte header; GOAWAY is type 7.
_FRAME_HEADER = 9
_GOAWAY = 7


class H2Response:
    """
    What came back on one stream.

    @ivar status: the C{:status}, once the response head came.
    @ivar headers: the response's fields, pseudo-header fields included.
    @ivar interim: the header blocks of the 1xx responses before it.
    @ivar body: the body received so far.
    @ivar ended: whether the server ended the stream.
    @ivar reset: the error code of the server's RST_STREAM, or L{None}.
    @ivar done: fires with this response once the stream ends, is reset, or
        the connection closes.
    """

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim: list[list[tuple[bytes, bytes]]] = []
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None
        self.done: Deferred[H2Response] = Deferred()
        self._waiting: list[tuple[int, Deferred[H2Response]]] = []

    def header(self, name: bytes) -> list[bytes]:
        """
        Every value of the field C{name}.
        """
        return [value for key, value in self.headers if key == name]

    def wait_for_body(self, size: int) -> Deferred[H2Response]:
        """
        Fire once at least C{size} bytes of body came, or the stream is over.
        """
        waiter: Deferred[H2Response] = Deferred()
        if len(self.body) >= size or self.done.called:
            waiter.callback(self)
        else:
            self._waiting.append((size, waiter))
        return waiter

    def _received(self, data: bytes) -> None:
        self.body += data
        still = []
        for size, waiter in self._waiting:
            if len(self.body) >= size:
                waiter.callback(self)
            else:
                still.append((size, waiter))
        self._waiting = still

    def _finish(self) -> None:
        if not self.done.called:
            waiting, self._waiting = self._waiting, []
            for _, waiter in waiting:
                waiter.callback(self)
            self.done.callback(self)


class H2Client(Protocol):
    """
    An HTTP/2 client with prior knowledge, on h2.

    It sends request bodies as the server's windows allow, and acknowledges
    the data it receives unless told not to (to fill the server's windows).
    GOAWAY frames are taken out of what it reads and kept in C{goaways},
    since h2 would read nothing more after one, and a graceful GOAWAY lets
    streams go on.

    @ivar connection: the h2 connection, for tests to send frames by hand.
    @ivar goaways: the GOAWAY frames received, in order.
    @ivar unacknowledged: per stream, the bytes received and not acknowledged.
    @ivar closed: fires once the connection is closed.
    """

    def __init__(
        self, acknowledge: bool = True, validate: bool = True, window: int | None = None
    ) -> None:
        """
        @param acknowledge: whether to acknowledge data at once.
        @param validate: whether h2 checks and normalises the headers sent;
            without, a test can send malformed requests.
        @param window: the initial stream window to announce, or L{None} for
            h2's 65,535 bytes.
        """
        config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=validate,
            normalize_outbound_headers=validate,
        )
        self.connection = H2Connection(config=config)
        if window is not None:
            self.connection.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        self.acknowledge = acknowledge
        self.responses: dict[int, H2Response] = {}
        self.goaways: list[GoAwayFrame] = []
        self.unacknowledged: dict[int, int] = {}
        self.closed: Deferred[None] = Deferred()
        self._outbound: dict[int, tuple[deque[bytes], bool]] = {}
        self._pings: deque[Deferred[None]] = deque()
        self._read = bytearray()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.connection.initiate_connection()
        self.flush()

    def flush(self) -> None:
        """
        Write what h2 has ready to send.
        """
        data = self.connection.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def request(
        self,
        path: bytes = b"/",
        method: bytes = b"GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: bytes | None = b"example.com",
    ) -> H2Response:
        """
        Open a stream and send a request on it.

        @param body: the body to send, if any.
        @param end: whether the request ends with C{body}; otherwise L{send}
            sends the rest.
        @return: the response, to wait on.
        """
        stream_id = self.connection.get_next_available_stream_id()
        fields = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
        if authority is not None:
            fields.insert(1, (b":authority", authority))
        fields.extend(headers or [])
        response = self.responses[stream_id] = H2Response()
        self.connection.send_headers(stream_id, fields, end_stream=end and body is None)
        if body is not None:
            self.send(stream_id, body, end)
        self.flush()
        return response

    def stream_id(self, response: H2Response) -> int:
        """
        The stream a response comes on.
        """
        return next(key for key, value in self.responses.items() if value is response)

    def send(self, stream_id: int, data: bytes, end: bool = True) -> None:
        """
        Send request body on a stream as the windows allow, then end it if C{end}.
        """
        queue, _ = self._outbound.get(stream_id, (deque(), False))
        if data:
            queue.append(data)
        self._outbound[stream_id] = (queue, end)
        self._send_outbound()

    def _send_outbound(self) -> None:
        connection = self.connection
        for stream_id, (queue, end) in list(self._outbound.items()):
            while queue:
                room = min(
                    connection.local_flow_control_window(stream_id),
                    connection.max_outbound_frame_size,
                )
                if room <= 0:
                    break
                data = queue.popleft()
                if len(data) > room:
                    queue.appendleft(data[room:])
                    data = data[:room]
                connection.send_data(stream_id, data)
            if not queue:
                del self._outbound[stream_id]
                if end:
                    connection.end_stream(stream_id)
        self.flush()

    def reset(self, response: H2Response) -> None:
        """
        Cancel a stream.
        """
        self.connection.reset_stream(self.stream_id(response), ErrorCodes.CANCEL)
        self.flush()

    def acknowledge_all(self) -> None:
        """
        Acknowledge every byte received so far, and those to come.
        """
        self.acknowledge = True
        for stream_id, size in self.unacknowledged.items():
            if size:
                self.connection.acknowledge_received_data(size, stream_id)
        self.unacknowledged.clear()
        self.flush()

    def ping(self) -> Deferred[None]:
        """
        Send a PING; fire when its acknowledgement comes, by which time the
        server has read everything sent before it.
        """
        waiter: Deferred[None] = Deferred()
        self._pings.append(waiter)
        self.connection.ping(b"txproxy!")
        self.flush()
        return waiter

    def dataReceived(self, data: bytes) -> None:
        buffer = self._read
        buffer += data
        start = offset = 0
        passed = []
        while len(buffer) - offset >= _FRAME_HEADER:
            end = offset + _FRAME_HEADER + int.from_bytes(buffer[offset : offset + 3], "big")
            if len(buffer) < end:
                break
            if buffer[offset + 3] == _GOAWAY:
                passed.append(bytes(buffer[start:offset]))
                header = memoryview(bytes(buffer[offset : offset + _FRAME_HEADER]))
                goaway, _ = GoAwayFrame.parse_frame_header(header)
                goaway.parse_body(memoryview(bytes(buffer[offset + _FRAME_HEADER : end])))
                self.goaways.append(goaway)
                start = end
            offset = end
        passed.append(bytes(buffer[start:offset]))
        del buffer[:offset]
        frames = b"".join(passed)
        if frames:
            self._events(frames)

    def _events(self, data: bytes) -> None:
        connection = self.connection
        for event in connection.receive_data(data):
            if isinstance(event, DataReceived):
                response = self.responses[event.stream_id]
                response._received(event.data)
                if self.acknowledge:
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                else:
                    self.unacknowledged[event.stream_id] = (
                        self.unacknowledged.get(event.stream_id, 0) + event.flow_controlled_length
                    )
            elif isinstance(event, ResponseReceived):
                response = self.responses[event.stream_id]
                response.headers = list(event.headers)
                response.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, InformationalResponseReceived):
                self.responses[event.stream_id].interim.append(list(event.headers))
            elif isinstance(event, StreamEnded):
                response = self.responses[event.stream_id]
                response.ended = True
                response._finish()
            elif isinstance(event, StreamReset):
                response = self.responses[event.stream_id]
                response.reset = event.error_code
                response._finish()
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                self._send_outbound()
            elif isinstance(event, PingAckReceived):
                self._pings.popleft().callback(None)
        self.flush()

    def connectionLost(self, reason: Failure) -> None:
        for response in self.responses.values():
            response._finish()
        self.closed.callback(None)


def connect_h2(port: int, **options: object) -> Deferred[H2Client]:
    """
    Connect an L{H2Client}, made with C{options}, to C{port} on 127.0.0.1.
    """
    factory = Factory.forProtocol(lambda: H2Client(**options))
    factory.noisy = False
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
