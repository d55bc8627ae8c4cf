# -*- test-case-name: tests.test_http_responses -*-
"""
The responses txproxy makes itself (400, 403, 404, 429, 502, ...) as L{LocalResponse} values.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus

from attrs import field, frozen

from txproxy.http.events import Headers

__all__ = ["CLOSING_STATUSES", "LocalResponse", "accept_weight", "local_response", "redirect"]

# RFC 9110 section 15: the reason phrases, 413 by its new name (15.5.14).
_REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

CLOSING_STATUSES = frozenset({400, 408, 413, 414, 431, 500})
"""
The statuses after which txproxy closes the connection unless told otherwise:
the request could not be read to its end, or (500) txproxy cannot tell what
state the connection is in.
"""

_PLAIN = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"


@frozen
class LocalResponse:
    """
    A whole response made by txproxy rather than a server, which ends its exchange.

    Its bytes are made once, when it is made, so that sending it costs no more
    than a write.

    @ivar status: the status code.
    @ivar reason: the reason phrase.
    @ivar headers: the fields besides C{Content-Length} and C{Connection},
        which L{to_bytes} adds.
    @ivar body: the whole body.
    @ivar close: whether the connection is closed after it.
    """

    status: int
    reason: bytes
    headers: Headers
    body: bytes
    close: bool
    _head: bytes = field(init=False, repr=False, eq=False)
    _message: bytes = field(init=False, repr=False, eq=False)

    @_head.default
    def _serialise_head(self) -> bytes:
        """
        The status line and fields as sent, ending with the empty line.
        """
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)]
        lines.extend(b"%s: %s\r\n" % each for each in self.headers)
        lines.append(b"Content-Length: %d\r\n" % (len(self.body),))
        if self.close:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    @_message.default
    def _serialise(self) -> bytes:
        """
        The whole message as sent.
        """
        return self._head + self.body

    def to_bytes(self, head_only: bool = False) -> bytes:
        """
        The HTTP/1.1 message to send.

        @param head_only: whether to leave out the body, to answer C{HEAD}; the
            head still gives the body's C{Content-Length} (RFC 9110 9.3.2).
        """
        return self._head if head_only else self._message


def accept_weight(parameters: list[bytes]) -> float | None:
    """
    The C{q} weight among the parameters of an C{Accept} or C{Accept-Encoding} member: 1 if not
    given, L{None} if not a number from 0 to 1.
    """
    for parameter in parameters:
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                quality = float(value.strip())
            except ValueError:
                return None
            return quality if 0 <= quality <= 1 else None
    return 1.0


@lru_cache(maxsize=64)
def _prefers_html(accept: bytes) -> bool:
    """
    Whether an C{Accept} value weights C{text/html} above C{text/plain}.

    Each type takes the weight of the most specific range that matches it
    (RFC 9110 12.5.1), so a browser's C{text/html,...,*/*;q=0.8} prefers HTML
    and curl's C{*/*} does not. Clients send few distinct values; the cache
    spares parsing each request's.
    """
    html = [-1.0, 0.0]  # [specificity, weight] for text/html
    plain = [-1.0, 0.0]
    for member in accept.split(b","):
        media_range, *parameters = member.split(b";")
        media_range = media_range.strip().lower()
        quality = accept_weight(parameters)
        if quality is None:
            continue
        for wanted, best in ((b"text/html", html), (b"text/plain", plain)):
            if media_range == wanted:
                specificity = 2
            elif media_range == b"text/*":
                specificity = 1
            elif media_range == b"*/*":
                specificity = 0
            else:
                continue
            if specificity > best[0]:
                best[0], best[1] = specificity, quality
    return html[1] > plain[1]


@lru_cache(maxsize=256)
def _made(status: int, html: bool, retry_after: int | None, close: bool) -> LocalResponse:
    """
    Make a local response; cached, so that each kind is serialised once.
    """
    reason = _REASONS.get(status) or HTTPStatus(status).phrase.encode("ascii")
    title = b"%d %s" % (status, reason)
    if html:
        content_type = _HTML
        body = (
            b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>%s</title></head>\n'
            b"<body><h1>%s</h1></body></html>\n" % (title, title)
        )
    else:
        content_type = _PLAIN
        body = title + b"\n"
    # RFC 9111 4.2.2 lets caches keep a 404 or 405 heuristically; txproxy's
    # answers change with its configuration and its servers' health.
    headers: Headers = ((b"Content-Type", content_type), (b"Cache-Control", b"no-store"))
    if retry_after is not None:
        headers += ((b"Retry-After", b"%d" % (retry_after,)),)
    return LocalResponse(status, reason, headers, body, close)


def local_response(
    status: int,
    accept: bytes | None = None,
    *,
    retry_after: int | None = None,
    close: bool | None = None,
) -> LocalResponse:
    """
    Make txproxy's own response of a status: a short body naming the status
    and nothing else, no server's address nor any other detail.

    @param status: the status code, such as C{404}.
    @param accept: the request's C{Accept} value: a small HTML page when it
        prefers C{text/html}, as browsers do; plain text otherwise.
    @param retry_after: seconds to send in C{Retry-After} (RFC 9110 10.2.3),
        for 429 and 503; L{None} for none.
    @param close: whether the connection is closed after the response;
        L{None} for the status's default, C{True} for L{CLOSING_STATUSES}.
    @return: the response; equal arguments return the same value.
    @raise ValueError: for a status that is not a known 4xx or 5xx, or a
        negative C{retry_after}.
    """
    if not 400 <= status <= 599:
        raise ValueError(f"a local response is an error, 4xx or 5xx, not {status}")
    if retry_after is not None and retry_after < 0:
        raise ValueError(f"retry_after must be at least 0, not {retry_after}")
    html = accept is not None and _prefers_html(accept)
    if close is None:
        close = status in CLOSING_STATUSES
    return _made(status, html, retry_after, close)


def redirect(location: bytes, method: bytes, close: bool = False) -> LocalResponse:
    """
    Send the client to C{location}, as a plain listener's C{http_to_https} does.

    C{GET} and C{HEAD} get 301, as nginx's C{return 301} gives; other methods
    get 308, which keeps the method and body (RFC 9110 15.4.9). C{close}
    closes the connection after it, as when a request body goes unread.
    """
    status = 301 if method in (b"GET", b"HEAD") else 308
    reason = HTTPStatus(status).phrase.encode("ascii")
    body = b"%d %s: %s\n" % (status, reason, location)
    return LocalResponse(
        status, reason, ((b"Location", location), (b"Content-Type", _PLAIN)), body, close
    )
