# -*- test-case-name: tests.test_http_writing -*-
"""
Events to bytes: message heads, chunked framing, and how a response is framed to its client.
"""

from __future__ import annotations

from attrs import frozen

from txproxy.http.events import Headers, RequestHead, ResponseHead

LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"


def encode_headers(headers: Headers) -> list[bytes]:
    """
    The header lines of C{headers}, each ending in CRLF, ready to join.
    """
    return [b"%s: %s\r\n" % field for field in headers]


def request_head(method: bytes, target: bytes, headers: Headers, chunked: bool) -> bytes:
    """
    The head of a request txproxy sends upstream: always HTTP/1.1.

    @param chunked: whether the body follows in chunks, which adds
        C{Transfer-Encoding: chunked} (the forwarded headers never carry one).
    """
    lines = [b"%s %s HTTP/1.1\r\n" % (method, target), *encode_headers(headers)]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(_CRLF)
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """
    One chunk of a chunked body (RFC 9112 section 7.1).
    """
    return b"%x\r\n%s\r\n" % (len(data), data)


@frozen
class ResponseFraming:
    """
    How a response is framed toward its client.

    @ivar chunked: whether txproxy chunks the body itself.
    @ivar close: whether the client connection closes after this response.
    """

    chunked: bool
    close: bool

    @classmethod
    def choose(
        cls, request: RequestHead, response: ResponseHead, keep_alive: bool
    ) -> ResponseFraming:
        """
        Frame C{response} to the client that sent C{request}.

        A body whose length is known keeps its C{Content-Length}. Otherwise an
        HTTP/1.1 client gets it chunked, and an HTTP/1.0 client gets it until
        the connection closes (RFC 9112 section 6.3).

        @param keep_alive: whether the client connection may serve another
            request, as far as the request and txproxy are concerned.
        """
        bodiless = (
            request.method == b"HEAD" or response.status in (204, 304) or response.status < 200
        )
        if bodiless or response.content_length is not None:
            return _FRAMINGS[False, not keep_alive]
        if request.version == b"1.1":
            return _FRAMINGS[True, not keep_alive]
        return _FRAMINGS[False, True]

    def head(self, response: ResponseHead, headers: Headers, client_version: bytes) -> bytes:
        """
        The status line and headers sent to the client, with this framing's
        C{Transfer-Encoding} and C{Connection} fields.
        """
        lines = [
            b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason),
            *encode_headers(headers),
        ]
        if self.chunked:
            lines.append(b"Transfer-Encoding: chunked\r\n")
        if self.close:
            lines.append(b"Connection: close\r\n")
        elif client_version == b"1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(_CRLF)
        return b"".join(lines)


# Every response takes one of four framings: made once, not per response.
_FRAMINGS = {
    (chunked, close): ResponseFraming(chunked=chunked, close=close)
    for chunked in (False, True)
    for close in (False, True)
}


def interim_head(response: ResponseHead, headers: Headers) -> bytes:
    """
    The head of an interim (1xx) response, passed on to an HTTP/1.1 client.
    """
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (response.status, response.reason),
            *encode_headers(headers),
            _CRLF,
        ]
    )
