# -*- test-case-name: tests.test_http_parsing -*-
"""
Readers that turn the bytes of HTTP/1.1 messages into events, strictly.
"""

from __future__ import annotations

import enum
import re
import sys
from collections import deque
from typing import NoReturn, cast

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
    HttpResponseParser,
)

from txproxy.http.events import (
    BadMessage,
    BodyChunk,
    EndOfMessage,
    RequestEvent,
    RequestHead,
    ResponseEvent,
    ResponseHead,
)

_END = EndOfMessage()

_Event = RequestHead | ResponseHead | BodyChunk | EndOfMessage | BadMessage

# RFC 9112 2.3: HTTP/1.0 and HTTP/1.1 are the versions of this syntax; llhttp
# also accepts 0.9 and 2.0 and reports RTSP/1.0 as 1.0.
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}

# The fields whose meaning a reader needs, by lower-case name.
_HOST = 1
_CONTENT_LENGTH = 2
_TRANSFER_ENCODING = 3
_EXPECT = 4
_CONNECTION = 5
_REQUEST_FIELDS = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
}
_RESPONSE_FIELDS = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
}

# RFC 9110 7.2 and RFC 3986 3.2.2: uri-host [ ":" port ], where uri-host is an
# IP-literal, an IPv4 address or a reg-name.
AUTHORITY = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[0-9A-Za-z!$&'()*+,;=._~%-]+)(?::[0-9]*)?")

# RFC 9112 3.2.2: absolute-form is an absolute-URI; a proxy in front of origin
# servers only takes http and https. RFC 9110 4.2.4: userinfo is an error.
_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#@]+)([/?][^#]*)?")

# RFC 9112 4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ).
_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

# The bytes of a head that callbacks do not show: SP target SP "HTTP/1.1" CRLF
# after the method; "HTTP/1.1 200 " and CRLF around the reason; ": " and CRLF
# per field. _check_head adds the final CRLF.
_REQUEST_LINE_OVERHEAD = 12
_STATUS_LINE_OVERHEAD = 15
_FIELD_OVERHEAD = 4


class _Phase(enum.Enum):
    """
    Where a reader is in the byte stream of its connection.
    """

    IDLE = enum.auto()  # between messages
    HEAD = enum.auto()  # inside a start line or header section
    BODY = enum.auto()  # after a head, before the end of its message
    RAW_BODY = enum.auto()  # the Content-Length body of an Upgrade request, counted here
    SWITCHED = enum.auto()  # after an upgrade: bytes are kept raw for detach()
    DETACHED = enum.auto()  # detach() took the raw bytes
    CLOSED = enum.auto()  # the connection ends after the last message: input ignored
    FAILED = enum.auto()  # a BadMessage was given: input ignored


class _Stop(Exception):
    """
    Raised in an llhttp callback to stop the parser where it is.
    """


class _Reader:
    """
    What L{RequestReader} and L{ResponseReader} share: the llhttp callbacks
    that collect a head, body events, the end of a message, and the counting
    that bounds a head and a trailer section however they are split into feeds.

    @ivar _bad_status: the status of a L{BadMessage} for a broken message.
    @ivar _too_large: the status of a L{BadMessage} for a head over the limits.
    @ivar _phase: where the reader is.
    @ivar _events: the events of the feed being read.
    @ivar _data: the bytes being given to llhttp now.
    @ivar _line: the pieces of the request-target or reason phrase.
    @ivar _line_bytes: their length.
    @ivar _headers: the header fields of the head being read, then its trailers.
    @ivar _head_bytes: the bytes of the head being read that came in earlier feeds.
    @ivar _quiet_bytes: the bytes of chunked framing and trailers since the
        last body data.
    @ivar _body_seen: whether body data came in this feed.
    @ivar _completed: whether a message ended in this feed.
    @ivar _failure: the L{BadMessage} a callback stopped llhttp for.
    @ivar _raw: the bytes after a switch of protocols, for C{detach}.
    """

    _parser: HttpRequestParser | HttpResponseParser | None

    def __init__(
        self, max_header_size: int, max_headers: int, bad_status: int, too_large: int
    ) -> None:
        self._max_header_size = max_header_size or sys.maxsize
        self._max_headers = max_headers or sys.maxsize
        self._bad_status = bad_status
        self._too_large = too_large
        self._phase = _Phase.IDLE
        # Made at the first bytes (see _parse): an idle connection holds no llhttp state.
        self._parser = None
        self._events: list[_Event] = []
        self._data = b""
        self._line: list[bytes] = []
        self._line_bytes = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._quiet_bytes = 0
        self._body_seen = False
        self._completed = False
        self._chunked = False
        self._keep_alive = True
        self._failure: BadMessage | None = None
        self._raw: list[bytes] = []

    # llhttp callbacks, kept small: they run for every message.

    def on_message_begin(self) -> None:
        """
        llhttp: a message starts.
        """
        self._phase = _Phase.HEAD

    def on_header(self, name: bytes, value: bytes) -> None:
        """
        llhttp: one header or trailer field.
        """
        # RFC 9112 5.1: OWS around a field value is not part of it; llhttp
        # drops the leading OWS only.
        self._headers.append((name, value.rstrip(b" \t")))

    def on_body(self, data: bytes) -> None:
        """
        llhttp: some body bytes, without transfer-coding.
        """
        self._body_seen = True
        self._events.append(BodyChunk(data))

    # Shared steps.

    def _feed(self, data: bytes) -> list[_Event]:
        """
        Read C{data} and return its events.
        """
        phase = self._phase
        if phase is _Phase.SWITCHED:
            self._raw.append(data)
            return []
        if phase is _Phase.CLOSED or phase is _Phase.FAILED:
            return []
        if phase is _Phase.DETACHED:
            raise RuntimeError("the reader was detached from its connection")
        events: list[_Event] = []
        self._events = events
        self._completed = False
        self._body_seen = False
        if phase is _Phase.RAW_BODY:
            rest = self._consume_raw(data, 0)
            if rest:
                self._parse(rest)
        else:
            self._parse(data)
        phase = self._phase
        if phase is _Phase.HEAD:
            self._count_head(data)
        elif phase is _Phase.BODY and self._chunked:
            self._count_quiet(data)
        return events

    def _parse(self, data: bytes) -> None:
        """
        Give C{data} to llhttp, and deal with how it stops.
        """
        while True:
            self._data = data
            parser = self._parser
            if parser is None:
                parser = self._parser = self._new_parser()
            try:
                parser.feed_data(data)
                return
            except HttpParserUpgrade as pause:
                rest = self._upgraded(data, pause.args[0])
                if not rest:
                    return
                data = rest
            except HttpParserCallbackError as error:
                if not isinstance(error.__context__, _Stop):
                    raise
                if self._failure is not None:
                    self._fail(self._failure)
                return
            except HttpParserError as error:
                # After a message that closes the connection, llhttp refuses
                # more bytes; RFC 9112 9.6: they are not read.
                if self._phase is not _Phase.CLOSED:
                    self._fail(BadMessage(str(error), self._bad_status))
                return

    def _new_parser(self) -> HttpRequestParser | HttpResponseParser:
        """
        A new llhttp parser calling back this reader.
        """
        raise NotImplementedError()

    def _upgraded(self, data: bytes, offset: int) -> bytes | None:
        """
        Deal with llhttp pausing after an upgrading message.

        @param offset: where the other protocol's bytes start in C{data}.
        @return: bytes to parse as HTTP/1.1 again, if any.
        """
        raise NotImplementedError()

    def _consume_raw(self, data: bytes, offset: int) -> bytes | None:
        """
        Read a body that llhttp skipped.

        @return: bytes to parse as HTTP/1.1 again, if any.
        """
        raise NotImplementedError()

    def _reject(self, reason: str, status: int | None = None) -> NoReturn:
        """
        Stop llhttp from a callback and fail with C{reason}.
        """
        self._failure = BadMessage(reason, status or self._bad_status)
        raise _Stop()

    def _fail(self, failure: BadMessage) -> None:
        """
        Give C{failure} as the last event of this reader, in place of the
        events this feed gave of the failed message: a message found bad in
        the feed that started it is never given at all.
        """
        events = self._events
        start = len(events)
        while start and type(events[start - 1]) is not EndOfMessage:
            start -= 1
        del events[start:]
        events.append(failure)
        self._phase = _Phase.FAILED
        self._headers = []
        self._line = []

    def _check_head(self, fixed: int) -> None:
        """
        Reject a complete head over the limits (RFC 6585 5: 431).

        @param fixed: the start line's bytes other than the target or reason.
        """
        headers = self._headers
        if len(headers) > self._max_headers:
            self._reject("too many header fields", self._too_large)
        if self._head_bytes + len(self._data) > self._max_header_size:
            # Maybe too large: the feed also holds other bytes, so count.
            size = fixed + self._line_bytes + 2
            for name, value in headers:
                size += len(name) + len(value) + _FIELD_OVERHEAD
            if max(size, self._head_bytes) > self._max_header_size:
                self._reject("header section too large", self._too_large)

    def _count_head(self, data: bytes) -> None:
        """
        Count the bytes of a head that is not complete after a feed, and fail
        if it grew past the limits: so a peer sending its head a byte at a time
        gets no more memory than one sending it at once.
        """
        if self._completed:
            # The head started after a message that ended in this feed:
            # count what callbacks saw of it (less only a field in progress).
            size = self._line_bytes
            for name, value in self._headers:
                size += len(name) + len(value) + _FIELD_OVERHEAD
            self._head_bytes = size
        else:
            self._head_bytes += len(data)
        failure = self._partial_head_failure()
        if failure is None:
            if len(self._headers) > self._max_headers:
                failure = BadMessage("too many header fields", self._too_large)
            elif self._head_bytes > self._max_header_size:
                failure = BadMessage("header section too large", self._too_large)
        if failure is not None:
            self._fail(failure)

    def _partial_head_failure(self) -> BadMessage | None:
        """
        The failure for an incomplete head that is already wrong, if any.
        """
        return None

    def _count_quiet(self, data: bytes) -> None:
        """
        Count the bytes of chunked framing and trailers since the last body
        data, and fail past the head limit: llhttp keeps a trailer field in
        progress in memory.
        """
        if self._body_seen:
            self._quiet_bytes = 0
        else:
            self._quiet_bytes += len(data)
            if self._quiet_bytes > self._max_header_size:
                self._fail(BadMessage("trailer section too large", self._too_large))

    def _end_message(self) -> None:
        """
        Give the end of a message with its trailers, and get ready for the next.
        """
        self._completed = True
        self._head_bytes = 0
        trailers = self._headers
        if trailers:
            # RFC 9112 7.1.2: trailers are limited as header fields are.
            if len(trailers) > self._max_headers:
                self._reject("too many trailer fields", self._too_large)
            self._headers = []
            self._events.append(EndOfMessage(tuple(trailers)))
        else:
            self._events.append(_END)
        self._phase = _Phase.IDLE if self._keep_alive else _Phase.CLOSED

    def _framing(
        self,
        version: bytes,
        content_length: bytes | None,
        lengths: int,
        transfer_encoding: bytes | None,
        codings: int,
    ) -> tuple[int | None, bool]:
        """
        Check the framing fields of a head, as RFC 9112 6 asks of a proxy.

        @param lengths: how many Content-Length fields the head has.
        @param codings: how many Transfer-Encoding fields the head has.
        @return: the Content-Length, and whether the body is chunked.
        """
        if transfer_encoding is not None:
            if content_length is not None:
                # RFC 9112 6.3 (3): both may be a smuggling attempt.
                self._reject("Content-Length with Transfer-Encoding")
            if version == b"1.0":
                # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
                self._reject("Transfer-Encoding in an HTTP/1.0 message")
            if codings > 1 or transfer_encoding.lower() != b"chunked":
                # RFC 9112 6.3 (4): chunked must be the final coding; a proxy
                # that re-frames bodies takes chunked alone.
                self._reject("Transfer-Encoding other than chunked")
            return None, True
        if content_length is None:
            return None, False
        # RFC 9112 6.3 (5) and RFC 9110 8.6: one plain decimal.
        if lengths > 1:
            self._reject("several Content-Length fields")
        if not content_length.isdigit():
            self._reject("invalid Content-Length")
        return int(content_length), False


class RequestReader(_Reader):
    """
    Reads the requests of one client connection: bytes in, events out.

    Each request gives a L{RequestHead}, L{BodyChunk}s with any transfer-coding
    removed, and an L{EndOfMessage}; pipelined requests follow in order. A
    request that breaks the protocol or a limit gives one L{BadMessage} and
    nothing after it, ever: ambiguous framing is never forwarded.

    @ivar _max_target: the longest request-target taken.
    @ivar _pausing: whether llhttp will pause after the message (Upgrade).
    @ivar _switch: whether the paused message switches protocols.
    @ivar _raw_left: the bytes of an Upgrade request's body not yet read.
    """

    def __init__(
        self, max_header_size: int = 16384, max_headers: int = 100, max_target: int = 8192
    ) -> None:
        """
        @param max_header_size: the most bytes of a request line and header
            section (431 past it); 0 for no limit.
        @param max_headers: the most header fields (431 past it); 0 for no limit.
        @param max_target: the longest request-target (414 past it); 0 for no limit.
        """
        super().__init__(max_header_size, max_headers, 400, 431)
        self._max_target = max_target or sys.maxsize
        self._pausing = False
        self._switch = False
        self._raw_left = 0

    def _new_parser(self) -> HttpRequestParser:
        return HttpRequestParser(self)

    def feed(self, data: bytes) -> list[RequestEvent]:
        """
        Read some bytes from the client.

        @return: the events they complete, in order; C{[]} after a
            L{BadMessage}, after a request that closes the connection, and
            after an upgrade (the bytes are kept for L{detach}).
        @raise RuntimeError: after L{detach}.
        """
        return cast("list[RequestEvent]", self._feed(data))

    def feed_eof(self) -> list[RequestEvent]:
        """
        Note that the client closed its side of the connection.

        @return: C{[]} between requests, or a L{BadMessage} inside one.
        """
        phase = self._phase
        if phase is _Phase.IDLE:
            self._phase = _Phase.CLOSED
        elif phase is _Phase.HEAD:
            return self._truncated("truncated request head")
        elif phase is _Phase.BODY or phase is _Phase.RAW_BODY:
            return self._truncated("truncated request body")
        return []

    @property
    def in_head(self) -> bool:
        """
        Whether part of a request head has come but not all of it.
        """
        return self._phase is _Phase.HEAD

    def detach(self) -> bytes:
        """
        Take the bytes the client sent after a request that switched protocols;
        the reader reads nothing more.

        @raise RuntimeError: if no request switched protocols.
        """
        if self._phase is not _Phase.SWITCHED:
            raise RuntimeError("no request switched protocols")
        self._phase = _Phase.DETACHED
        raw = b"".join(self._raw)
        self._raw = []
        return raw

    def _truncated(self, reason: str) -> list[RequestEvent]:
        """
        Fail for a connection that ended inside a request.
        """
        events: list[_Event] = []
        self._events = events
        self._fail(BadMessage(reason))
        return cast("list[RequestEvent]", events)

    # llhttp callbacks

    def on_url(self, target: bytes) -> None:
        """
        llhttp: a piece of the request-target.
        """
        self._line.append(target)
        self._line_bytes += len(target)

    def on_headers_complete(self) -> None:
        """
        llhttp: the head is complete: check it and give its L{RequestHead}.
        """
        parser = self._parser
        assert isinstance(parser, HttpRequestParser)  # llhttp is calling back
        method = parser.get_method()
        if (
            self._head_bytes + len(self._data) > self._max_header_size
            or len(self._headers) > self._max_headers
        ):
            self._check_head(len(method) + _REQUEST_LINE_OVERHEAD)
        if self._line_bytes > self._max_target:
            self._reject("request-target too long", 414)
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            self._reject("unsupported HTTP version")
        if method == b"CONNECT":
            self._reject("CONNECT is not supported", 405)

        headers = self._headers
        host = content_length = transfer_encoding = None
        hosts = lengths = codings = 0
        expect_continue = False
        for name, value in headers:
            field = _REQUEST_FIELDS.get(name.lower())
            if field is None:
                continue
            if field == _HOST:
                hosts += 1
                host = value
            elif field == _CONTENT_LENGTH:
                lengths += 1
                content_length = value
            elif field == _TRANSFER_ENCODING:
                codings += 1
                transfer_encoding = value
            else:
                expect_continue = value.lower() == b"100-continue"
        # RFC 9112 3.2: no Host in HTTP/1.1, several, or an invalid one: 400.
        if hosts > 1:
            self._reject("more than one Host field")
        if host is None:
            if version == b"1.1":
                self._reject("no Host field")
        elif host and AUTHORITY.fullmatch(host) is None:
            self._reject("invalid Host field")
        length, chunked = self._framing(
            version, content_length, lengths, transfer_encoding, codings
        )

        target = b"".join(self._line)
        if target[:1] == b"/":
            if b"#" in target:
                # RFC 9112 3.2: a request-target has no fragment.
                self._reject("invalid request-target")
        elif target == b"*":
            # RFC 9112 3.2.4: asterisk-form is for OPTIONS only.
            if method != b"OPTIONS":
                self._reject("asterisk-form request-target outside OPTIONS")
        else:
            absolute = _ABSOLUTE_FORM.fullmatch(target)
            if absolute is None or AUTHORITY.fullmatch(absolute[1]) is None:
                self._reject("invalid request-target")
            # RFC 9112 3.2.2: the authority of an absolute-form target
            # overrides Host; forward the origin-form (RFC 9112 3.2.1: an
            # empty path is "/").
            host = absolute[1]
            path = absolute[2] or b"/"
            target = path if path[:1] == b"/" else b"/" + path

        pausing = parser.should_upgrade()
        # RFC 9110 7.8: an Upgrade in an HTTP/1.0 request is ignored.
        upgrade = pausing and version == b"1.1"
        if upgrade and chunked:
            self._reject("chunked body in an Upgrade request")
        keep_alive = parser.should_keep_alive()
        # Positional arguments, in field order: a third faster than keywords.
        self._events.append(
            RequestHead(
                method,
                target,
                version,
                tuple(headers),
                length,
                chunked,
                keep_alive,
                upgrade,
                # RFC 9110 10.1.1: 100-continue in HTTP/1.0 is ignored.
                expect_continue and version == b"1.1",
                host,
            )
        )
        self._phase = _Phase.BODY
        self._headers = []
        self._line = []
        self._line_bytes = 0
        self._quiet_bytes = 0
        self._chunked = chunked
        self._keep_alive = keep_alive
        if pausing:
            # llhttp skips the body of an Upgrade request and pauses after
            # the head: the body, if any, is counted here.
            self._pausing = True
            self._switch = upgrade
            self._raw_left = length or 0

    def on_message_complete(self) -> None:
        """
        llhttp: the message is complete.
        """
        if self._pausing:
            self._completed = True
            self._head_bytes = 0
            return
        self._end_message()

    # Shared steps

    def _upgraded(self, data: bytes, offset: int) -> bytes | None:
        self._pausing = False
        self._phase = _Phase.RAW_BODY
        return self._consume_raw(data, offset)

    def _consume_raw(self, data: bytes, offset: int) -> bytes | None:
        left = self._raw_left
        if left:
            body = data[offset : offset + left]
            if body:
                self._events.append(BodyChunk(body))
                left -= len(body)
                offset += len(body)
                self._raw_left = left
            if left:
                return None
        self._events.append(_END)
        self._completed = True
        rest = data[offset:]
        if self._switch:
            self._phase = _Phase.SWITCHED
            if rest:
                self._raw.append(rest)
            return None
        if not self._keep_alive:
            self._phase = _Phase.CLOSED
            return None
        self._phase = _Phase.IDLE
        return rest

    def _partial_head_failure(self) -> BadMessage | None:
        if self._line_bytes > self._max_target:
            return BadMessage("request-target too long", 414)
        return None


class ResponseReader(_Reader):
    """
    Reads the responses on one upstream connection: bytes in, events out.

    Each response gives a L{ResponseHead}, L{BodyChunk}s with any
    transfer-coding removed, and an L{EndOfMessage}; an interim (1xx)
    response gives its head only. A response that breaks the protocol or a
    limit gives one L{BadMessage} (with status 502, what the client gets) and
    nothing after it.

    @ivar _methods: the methods of the requests sent, oldest first.
    @ivar _until_close: whether the body being read ends when the server closes.
    @ivar _interim: whether the message being read is a 1xx response.
    @ivar _interims: the 1xx heads llhttp completed in C{_data}.
    @ivar _began_before: whether the head being read started before C{_data}.
    @ivar _tail: the last bytes of the head being read from earlier feeds.
    """

    def __init__(self, max_header_size: int = 65536, max_headers: int = 200) -> None:
        """
        @param max_header_size: the most bytes of a status line and header
            section; 0 for no limit.
        @param max_headers: the most header fields; 0 for no limit.
        """
        super().__init__(max_header_size, max_headers, 502, 502)
        self._methods: deque[bytes] = deque()
        self._until_close = False
        self._interim = False
        self._interims = 0
        self._began_before = False
        self._tail = b""

    def _new_parser(self) -> HttpResponseParser:
        return HttpResponseParser(self)

    def expect(self, method: bytes) -> None:
        """
        Note that a request with C{method} is being sent, so that the reader
        knows whether its response has a body (RFC 9110 9.3.2: not to HEAD).
        """
        self._methods.append(method)

    def feed(self, data: bytes) -> list[ResponseEvent]:
        """
        Read some bytes from the server.

        @return: the events they complete, in order; C{[]} after a
            L{BadMessage}, after a response that closes the connection, and
            after C{101 Switching Protocols} (the bytes are kept for L{detach}).
        @raise RuntimeError: after L{detach}.
        """
        events = self._feed(data)
        if self._phase is _Phase.HEAD:
            self._tail = (self._tail + data[-3:])[-3:]
        return cast("list[ResponseEvent]", events)

    def feed_eof(self) -> list[ResponseEvent]:
        """
        Note that the server closed the connection.

        @return: the L{EndOfMessage} of a body read until close; C{[]} between
            responses; or a L{BadMessage} inside a response.
        """
        phase = self._phase
        events: list[_Event] = []
        if phase is _Phase.IDLE:
            self._phase = _Phase.CLOSED
        elif phase is _Phase.HEAD:
            self._events = events
            self._fail(BadMessage("truncated response head", 502))
        elif phase is _Phase.BODY:
            if self._until_close:
                # RFC 9112 6.3 (8): the close ends such a body.
                events.append(_END)
                self._phase = _Phase.CLOSED
            else:
                self._events = events
                self._fail(BadMessage("truncated response body", 502))
        return cast("list[ResponseEvent]", events)

    def detach(self) -> bytes:
        """
        Take the bytes the server sent after C{101 Switching Protocols}; the
        reader reads nothing more.

        @raise RuntimeError: if no response switched protocols.
        """
        if self._phase is not _Phase.SWITCHED:
            raise RuntimeError("no response switched protocols")
        self._phase = _Phase.DETACHED
        raw = b"".join(self._raw)
        self._raw = []
        return raw

    # llhttp callbacks

    def on_status(self, reason: bytes) -> None:
        """
        llhttp: a piece of the reason phrase.
        """
        self._line.append(reason)
        self._line_bytes += len(reason)

    def on_headers_complete(self) -> None:
        """
        llhttp: the head is complete: check it and give its L{ResponseHead}, and
        for a response without a body its L{EndOfMessage}.
        """
        parser = self._parser
        assert isinstance(parser, HttpResponseParser)  # llhttp is calling back
        if (
            self._head_bytes + len(self._data) > self._max_header_size
            or len(self._headers) > self._max_headers
        ):
            self._check_head(_STATUS_LINE_OVERHEAD)
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            self._reject("unsupported HTTP version")
        status = parser.get_status_code()
        if not 100 <= status <= 599:
            # RFC 9110 15: other values are invalid.
            self._reject("invalid status code")
        reason = b"".join(self._line)
        if _REASON.fullmatch(reason) is None:
            self._reject("invalid reason phrase")

        headers = self._headers
        content_length = transfer_encoding = None
        lengths = codings = 0
        connection: list[bytes] = []
        for name, value in headers:
            field = _RESPONSE_FIELDS.get(name.lower())
            if field is None:
                continue
            if field == _CONTENT_LENGTH:
                lengths += 1
                content_length = value
            elif field == _TRANSFER_ENCODING:
                codings += 1
                transfer_encoding = value
            else:
                connection.append(value)
        length, chunked = self._framing(
            version, content_length, lengths, transfer_encoding, codings
        )
        self._headers = []
        self._line = []
        self._line_bytes = 0

        if status < 200 and status != 101:
            # RFC 9110 15.2: a 1xx response ends with its head; RFC 9110 8.6
            # and RFC 9112 6.1: it has neither Content-Length nor
            # Transfer-Encoding (llhttp would read a body for some codes).
            if content_length is not None or chunked:
                self._reject("interim response with content framing")
            self._events.append(ResponseHead(status, reason, version, tuple(headers)))
            self._interim = True
            return

        method = self._methods.popleft() if self._methods else b""
        if status == 101:
            # RFC 9110 15.2.2: the server says which protocol in Upgrade; llhttp
            # pauses after this head only then.
            if not parser.should_upgrade():
                self._reject("101 response without Upgrade")
            self._events.append(
                ResponseHead(status, reason, version, tuple(headers), length, keep_alive=False)
            )
            return

        if method == b"HEAD" or status == 204 or status == 304:
            # RFC 9110 6.4.1 and RFC 9112 6.3 (1): no body, whatever the
            # framing fields say; they stay in the head to be forwarded.
            keep_alive = _persistent(version, connection)
            if self._head_end() < len(self._data):
                # Bytes after a bodiless response, which nothing asked for:
                # this connection cannot be trusted with another request.
                keep_alive = False
            self._events.append(
                ResponseHead(status, reason, version, tuple(headers), length, chunked, keep_alive)
            )
            self._events.append(_END)
            self._head_bytes = 0
            self._tail = b""
            if keep_alive:
                # llhttp cannot be told to skip a body: start afresh at the next bytes.
                self._parser = None
                self._phase = _Phase.IDLE
            else:
                self._phase = _Phase.CLOSED
            raise _Stop()

        # RFC 9112 6.3 (8): neither field: the body ends when the server closes.
        until_close = length is None and not chunked
        keep_alive = parser.should_keep_alive() and not until_close
        self._events.append(
            ResponseHead(
                status, reason, version, tuple(headers), length, chunked, keep_alive, until_close
            )
        )
        self._phase = _Phase.BODY
        self._quiet_bytes = 0
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._until_close = until_close

    def on_message_complete(self) -> None:
        """
        llhttp: the message is complete.
        """
        if self._interim:
            self._interim = False
            self._interims += 1
            self._completed = True
            self._head_bytes = 0
            self._tail = b""
            self._phase = _Phase.IDLE
            return
        self._tail = b""
        self._end_message()

    # Shared steps

    def _parse(self, data: bytes) -> None:
        self._interims = 0
        self._began_before = self._phase is _Phase.HEAD
        super()._parse(data)

    def _upgraded(self, data: bytes, offset: int) -> bytes | None:
        # llhttp gave the end of the 101 response already.
        self._phase = _Phase.SWITCHED
        if offset < len(data):
            self._raw.append(data[offset:])
        return None

    def _head_end(self) -> int:
        """
        Find where the head llhttp just completed ends in C{_data}: after its
        CRLF CRLF, past any 1xx heads before it. (txproxy sends one request at
        a time; should responses to pipelined requests share a feed, this errs
        early, and so towards closing the connection.)

        @return: the offset, or 0 if the head cannot be found.
        """
        data = self._data
        position = 0
        heads = self._interims + 1
        if self._began_before:
            # The first head started in an earlier feed: its CRLF CRLF may
            # straddle the two.
            joined = self._tail + data[:3]
            found = joined.find(b"\r\n\r\n")
            if found >= 0:
                position = found + 4 - len(self._tail)
            else:
                position = data.find(b"\r\n\r\n") + 4
                if position < 4:
                    return 0
            heads -= 1
        for _ in range(heads):
            # RFC 9112 2.2: empty lines before a message are ignored.
            while data[position : position + 1] in (b"\r", b"\n"):
                position += 1
            position = data.find(b"\r\n\r\n", position) + 4
            if position < 4:
                return 0
        return position


def _persistent(version: bytes, connection: list[bytes]) -> bool:
    """
    Whether a message lets its connection carry another (RFC 9112 9.3).

    @param connection: the values of its Connection fields.
    """
    options = {option.strip().lower() for value in connection for option in value.split(b",")}
    if b"close" in options:
        return False
    return version == b"1.1" or b"keep-alive" in options
