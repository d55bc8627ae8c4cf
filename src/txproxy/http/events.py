# -*- test-case-name: tests.test_http_parsing -*-
"""
The events of an HTTP/1.1 message, as readers produce them and writers consume them.
"""

from __future__ import annotations

from attrs import frozen

Headers = tuple[tuple[bytes, bytes], ...]
"""
Header fields in the order received, names as sent: never merged or re-ordered.
"""


@frozen
class RequestHead:
    """
    The request line and header fields of one request.

    @ivar method: the method, e.g. C{b"GET"}.
    @ivar target: the request-target as sent, e.g. C{b"/a?b=1"}.
    @ivar version: C{b"1.1"} or C{b"1.0"}.
    @ivar headers: every header field, in order.
    @ivar content_length: the body length when framed by Content-Length, else L{None}.
    @ivar chunked: whether the body is framed by chunked transfer-coding.
    @ivar keep_alive: whether the client lets the connection serve another request.
    @ivar upgrade: whether the client asks to switch protocols (C{Connection: upgrade}).
    @ivar expect_continue: whether the client waits for C{100 Continue} before its body.
    @ivar host: the Host header's value (L{None} only for HTTP/1.0 without one).
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    upgrade: bool = False
    expect_continue: bool = False
    host: bytes | None = None

    @property
    def has_body(self) -> bool:
        """
        Whether body events follow this head.
        """
        return self.chunked or bool(self.content_length)

    @property
    def path(self) -> bytes:
        """
        The target without its query, for routing.
        """
        return self.target.partition(b"?")[0]


@frozen
class ResponseHead:
    """
    The status line and header fields of one response.

    @ivar status: the status code.
    @ivar reason: the reason phrase as sent.
    @ivar version: C{b"1.1"} or C{b"1.0"}.
    @ivar headers: every header field, in order.
    @ivar content_length: the body length when framed by Content-Length, else L{None}.
    @ivar chunked: whether the body is framed by chunked transfer-coding.
    @ivar keep_alive: whether the server lets the connection serve another request.
    @ivar until_close: whether the body ends only when the server closes.
    """

    status: int
    reason: bytes
    version: bytes
    headers: Headers
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    until_close: bool = False


@frozen
class BodyChunk:
    """
    Some bytes of a message body, with any transfer-coding removed.
    """

    data: bytes


@frozen
class EndOfMessage:
    """
    The end of a message, with the trailer fields of a chunked body if any.
    """

    trailers: Headers = ()


@frozen
class BadMessage:
    """
    The message broke the protocol or a limit; nothing follows it.

    @ivar reason: what was wrong, for the log (never sent to a peer in full).
    @ivar status: the status txproxy answers with: 400, 405, 408, 413, 414 or 431 for
        a request; 502 for a response.
    """

    reason: str
    status: int = 400


RequestEvent = RequestHead | BodyChunk | EndOfMessage | BadMessage
ResponseEvent = ResponseHead | BodyChunk | EndOfMessage | BadMessage
