# -*- test-case-name: tests.test_http_compression -*-
"""
Response compression: the coding a client gets, the responses that qualify, streaming encoders.

Pure: nothing here touches a reactor or a transport. An exchange asks L{decide}
once, with the response head it is about to send; when it gets a
L{CompressionPlan} it sends the plan's head instead, and passes each body
chunk through the plan's L{Encoder}::

    plan = decide(route.compression, request, response, headers)
    if plan is not None:
        response, headers = plan.response, plan.headers
        encoder = plan.encoder()          # None: only Vary was added
    ...
    for each body chunk:  data = encoder.compress(chunk); if data: send(data)
    at the end:           send(encoder.finish()), then end the response

Each L{Encoder.compress} call flushes, so that what the client has received
decodes to all the body given so far: a slow stream (server-sent events, a
long poll, a progress page) reaches the client as it is made, and no body is
held. A flush costs a few bytes and ends the encoder's block, which costs
ratio when chunks are small. Measured at level 6 on text, against one
unflushed stream: 16 KiB and 64 KiB chunks lose under 1%, 1 KiB chunks about
9%, 100-byte chunks about a third. nginx flushes each of its buffers the same
way. Callers that have several chunks at once should join them and compress
them in one call.

Memory is bounded per response by the encoder's state, measured in a fresh
process after a first chunk: gzip about 120 KiB at any level; brotli (window
512 KiB, as ngx_brotli's default) about 0.3 MiB at levels 1-3, 0.55 MiB at 4,
1.3 MiB at 5, 2.5 MiB at 6 and 7 MiB at 9; zstd (window 512 KiB) about
0.1-0.8 MiB at levels 1-3, 2.6 MiB at 6 and 10 MiB at 9.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Protocol

import brotli  # type: ignore[import-untyped, unused-ignore]
from attrs import evolve, frozen

from txproxy.config import Compression
from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.http.responses import accept_weight

try:
    import zstandard  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # the optional extra "zstd" is not installed
    _HAVE_ZSTD = False
else:
    _HAVE_ZSTD = True

__all__ = [
    "ENCODINGS",
    "BrotliEncoder",
    "CompressionPlan",
    "Encoder",
    "GzipEncoder",
    "ZstdEncoder",
    "choose_encoding",
    "decide",
    "encoded_not_modified",
    "negotiate",
]

# RFC 9110 5.6.2: a content-coding name is a token.
_CODING = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")

# RFC 9110 8.4.1.3: a recipient SHOULD consider "x-gzip" to be "gzip".
_ALIASES = {b"x-gzip": b"gzip"}

_ANY = b"*"
_IDENTITY = b"identity"

# Statuses whose content is compressed: the 2xx that carry a whole
# representation (not 204 or 205, with none, nor 206, a part of one:
# RFC 9110 15.3.7 would need the ranges recomputed), and error bodies, which
# are pages or JSON like any other. 1xx, 101 and 3xx are left alone: 304 has
# no content and redirects have little.
_COMPRESSED_STATUSES = frozenset({200, 201, 202, 203}) | frozenset(range(400, 600))

# Fields describing the content's bytes as the server sent them: a digest of
# the uncompressed bytes would be wrong of the compressed ones (RFC 9530),
# and a range of the compressed bytes cannot be served (as nginx, which
# clears Accept-Ranges).
_DROPPED_WHEN_COMPRESSED = frozenset(
    {
        b"content-length",
        b"content-md5",
        b"digest",
        b"content-digest",
        b"repr-digest",
        b"accept-ranges",
    }
)

# ngx_brotli's default brotli_window: 2 ** 19 bytes. zstd takes the same, well
# below the 8 MiB that RFC 9659 3 lets an HTTP encoder use.
_WINDOW_LOG = 19


class Encoder(Protocol):
    """
    Compresses one response body as it streams, in one content coding.
    """

    @property
    def encoding(self) -> str:
        """
        The content coding, as sent in C{Content-Encoding}.
        """

    def compress(self, data: bytes) -> bytes:
        """
        Compress some of the body and flush: the bytes returned so far decode
        to all the body given so far.

        @param data: the next bytes of the body.
        @return: the compressed bytes to send; empty, with nothing flushed,
            when C{data} is. Send nothing for an empty result: an empty chunk
            ends a chunked body.
        """

    def finish(self) -> bytes:
        """
        End the compressed stream; the encoder is spent after it.

        @return: the last bytes to send (for gzip, the trailer with the CRC).
        """


class GzipEncoder:
    """
    The C{gzip} coding (RFC 1952): deflate with the gzip header and trailer,
    each chunk ended by a zlib sync flush.
    """

    encoding = "gzip"

    def __init__(self, level: int) -> None:
        """
        @param level: the zlib level, 1-9.
        """
        # wbits 16 + 15: the gzip wrapper over a 32 KiB window.
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        """
        See L{Encoder.compress}.
        """
        if not data:
            return b""
        compressor = self._compressor
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        """
        See L{Encoder.finish}.
        """
        return self._compressor.flush(zlib.Z_FINISH)


class BrotliEncoder:
    """
    The C{br} coding (RFC 7932), each chunk ended by a brotli flush.
    """

    encoding = "br"

    def __init__(self, level: int) -> None:
        """
        @param level: the brotli quality, 1-9 here (brotli goes to 11, far
            too slow for a stream).
        """
        self._compressor = brotli.Compressor(quality=level, lgwin=_WINDOW_LOG)

    def compress(self, data: bytes) -> bytes:
        """
        See L{Encoder.compress}.
        """
        if not data:
            return b""
        compressor = self._compressor
        compressed: bytes = compressor.process(data) + compressor.flush()
        return compressed

    def finish(self) -> bytes:
        """
        See L{Encoder.finish}.
        """
        last: bytes = self._compressor.finish()
        return last


class ZstdEncoder:
    """
    The C{zstd} coding (RFC 9659), each chunk ended by a block flush; needs
    the C{zstandard} package (the C{zstd} extra).
    """

    encoding = "zstd"

    def __init__(self, level: int) -> None:
        """
        @param level: the zstd level, 1-9 here.
        """
        parameters = zstandard.ZstdCompressionParameters.from_level(level, window_log=_WINDOW_LOG)
        compressor = zstandard.ZstdCompressor(compression_params=parameters)
        self._compressor = compressor.compressobj()

    def compress(self, data: bytes) -> bytes:
        """
        See L{Encoder.compress}.
        """
        if not data:
            return b""
        compressor = self._compressor
        compressed: bytes = compressor.compress(data) + compressor.flush(
            zstandard.COMPRESSOBJ_FLUSH_BLOCK
        )
        return compressed

    def finish(self) -> bytes:
        """
        See L{Encoder.finish}.
        """
        last: bytes = self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        return last


_ENCODERS: dict[str, Callable[[int], Encoder]] = {"br": BrotliEncoder, "gzip": GzipEncoder}
if _HAVE_ZSTD:
    _ENCODERS["zstd"] = ZstdEncoder

ENCODINGS = frozenset(_ENCODERS)
"""
The content codings this installation can send: C{br} and C{gzip}, and
C{zstd} when the C{zstandard} package is installed.
"""


@lru_cache(maxsize=256)
def _weights(accept_encoding: bytes) -> tuple[dict[bytes, float], float | None]:
    """
    Parse an C{Accept-Encoding} value: the weight of each coding it names, in
    lower case, and the weight of C{*}, or L{None} without one.

    A member that is not a token with a valid weight is ignored; a coding
    named twice keeps its first weight. Clients send few distinct values, so
    the parse of each is cached; the result is not to be changed.
    """
    weights: dict[bytes, float] = {}
    for member in accept_encoding.split(b","):
        coding, *parameters = member.split(b";")
        coding = coding.strip(b" \t").lower()
        if not _CODING.fullmatch(coding):
            continue
        weight = accept_weight(parameters)
        if weight is None:
            continue
        weights.setdefault(_ALIASES.get(coding, coding), weight)
    return weights, weights.pop(_ANY, None)


def choose_encoding(accept_encoding: bytes | None, algorithms: Sequence[str]) -> str | None:
    """
    Choose the content coding of a response by the request's C{Accept-Encoding}
    (RFC 9110 12.5.3), among those txproxy offers.

    A coding is acceptable when the client names it, or C{*}, with a weight
    above 0; the highest weight wins, and among equal weights the first of
    C{algorithms}. No coding is chosen when the client weights C{identity}
    (or, not naming it, C{*}) above the best coding: it prefers the body
    unencoded. A client that sends no C{Accept-Encoding} gets none: RFC 9110
    lets any coding be sent then, but such clients are mostly scripts that
    would not decode it, as nginx assumes too. When no coding is acceptable
    the response goes as the server sent it, even under C{identity;q=0}:
    the server saw the same header, and answering it is the server's call.

    @param accept_encoding: the request's C{Accept-Encoding} fields, joined
        by commas, or L{None} when it sent none.
    @param algorithms: the codings offered, in the order preferred.
    @return: the coding, such as C{"gzip"}, or L{None} to send the body as it is.
    """
    if accept_encoding is None:
        return None
    weights, any_weight = _weights(accept_encoding)
    best, best_weight = None, 0.0
    for algorithm in algorithms:
        if algorithm not in _ENCODERS:
            continue
        weight = weights.get(algorithm.encode("ascii"), any_weight)
        if weight is not None and weight > best_weight:
            best, best_weight = algorithm, weight
    if best is None:
        return None
    identity = weights.get(_IDENTITY, any_weight)
    if identity is not None and identity > best_weight:
        return None
    return best


def _joined(headers: Headers, name: bytes) -> bytes | None:
    """
    The values of every field named C{name} (in lower case), joined by commas
    as a list-based field's may be (RFC 9110 5.3), or L{None} for none.
    """
    values = [value for field_name, value in headers if field_name.lower() == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def negotiate(request: RequestHead, algorithms: Sequence[str]) -> str | None:
    """
    Choose the content coding of a response to C{request}: L{choose_encoding}
    with its C{Accept-Encoding} fields. A cache keys its variants by this, so
    that clients sending different values that choose the same coding share one.
    """
    return choose_encoding(_joined(request.headers, b"accept-encoding"), algorithms)


@frozen
class CompressionPlan:
    """
    What compression does to one response: the head to send, and the coding
    of its body.

    @ivar encoding: the content coding, or L{None} when the response would be
        compressed for a client that accepted one of the codings, but this
        client did not: its head only gains C{Vary: Accept-Encoding}, so that
        caches downstream keep the variants apart.
    @ivar level: the level of the encoder.
    @ivar response: the head to send in place of the server's. When encoded,
        its C{content_length} is L{None}, so the client gets the body chunked
        (HTTP/1.1) or until the connection closes (HTTP/1.0), as
        L{txproxy.http.writing.ResponseFraming.choose} frames any body of
        unknown length; its C{headers} are L{headers}.
    """

    encoding: str | None
    level: int
    response: ResponseHead

    @property
    def headers(self) -> Headers:
        """
        The header fields to send. When encoded: C{Content-Length},
        C{Accept-Ranges} and digests of the unencoded bytes removed,
        C{Content-Encoding} added, a strong C{ETag} made weak. Always:
        C{Accept-Encoding} added to C{Vary}. The other fields keep their order.
        """
        return self.response.headers

    def encoder(self) -> Encoder | None:
        """
        Make the encoder of this response's body, or L{None} when it is sent
        unencoded.
        """
        if self.encoding is None:
            return None
        return _ENCODERS[self.encoding](self.level)

    def applied_to(self, response: ResponseHead) -> ResponseHead:
        """
        The same edits made to another head of the response: the server's
        own, before the route's edits, as a cache stores it, so that it
        describes the body the encoder makes.
        """
        if self.encoding is None:
            edited = list(response.headers)
            length = response.content_length
        else:
            edited = _encoded_headers(response.headers, self.encoding)
            length = None
        _with_vary(edited)
        return evolve(response, headers=tuple(edited), content_length=length)


@frozen
class _Types:
    """
    The media types to compress, compiled: exact types, and the top-level
    types of C{type/*} patterns; C{everything} for C{*/*}.
    """

    exact: frozenset[bytes]
    prefixes: frozenset[bytes]
    everything: bool

    def match(self, content_type: bytes | None) -> bool:
        """
        Whether a C{Content-Type} value names a type to compress, parameters
        such as C{charset} ignored, case-insensitively (RFC 9110 8.3.1).
        """
        if content_type is None:
            return False
        media_type = content_type.partition(b";")[0].strip(b" \t").lower()
        top, slash, _ = media_type.partition(b"/")
        if not slash:
            return False
        return self.everything or media_type in self.exact or top in self.prefixes


@lru_cache(maxsize=64)
def _types(types: tuple[str, ...]) -> _Types:
    """
    Compile a route's media types; cached, as routes share few lists.
    """
    exact, prefixes = set(), set()
    everything = False
    for each in types:
        media_type = each.lower().encode("ascii")
        top, _, sub = media_type.partition(b"/")
        if sub != b"*":
            exact.add(media_type)
        elif top == b"*":
            everything = True
        else:
            prefixes.add(top)
    return _Types(frozenset(exact), frozenset(prefixes), everything)


def _directives(value: bytes | None) -> frozenset[bytes]:
    """
    The directive names of a C{Cache-Control} value, in lower case.
    """
    if value is None:
        return frozenset()
    return frozenset(
        directive.partition(b"=")[0].strip(b" \t").lower() for directive in value.split(b",")
    )


def _no_transform(headers: Headers) -> bool:
    """
    Whether a message's C{Cache-Control} forbids intermediaries to change its
    content (RFC 9111 5.2.1.6, 5.2.2.6).
    """
    return b"no-transform" in _directives(_joined(headers, b"cache-control"))


def _lists_accept_encoding(vary: bytes) -> bool:
    """
    Whether a C{Vary} value already covers C{Accept-Encoding}, by naming it or
    by C{*}.
    """
    names = {name.strip(b" \t").lower() for name in vary.split(b",")}
    return b"accept-encoding" in names or b"*" in names


def _with_vary(headers: list[tuple[bytes, bytes]]) -> None:
    """
    Add C{Accept-Encoding} to C{Vary}: to the first C{Vary} field, or in a
    new one; never twice.
    """
    first = None
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            if _lists_accept_encoding(value):
                return
            if first is None:
                first = index
    if first is None:
        headers.append((b"Vary", b"Accept-Encoding"))
        return
    name, value = headers[first]
    value = value.strip(b" \t")
    headers[first] = (name, value + b", Accept-Encoding" if value else b"Accept-Encoding")


def _weak(etag: bytes) -> bytes | None:
    """
    The weak form of an entity-tag (RFC 9110 8.8.3): the encoded bytes are
    not the bytes a strong validator vouches for, so If-Range and strong
    comparison must fail. L{None} for a value that is not an entity-tag, which
    nginx drops too.
    """
    etag = etag.strip(b" \t")
    if etag.startswith(b'W/"'):
        return etag
    if etag.startswith(b'"'):
        return b"W/" + etag
    return None


def _encoded_headers(headers: Headers, encoding: str) -> list[tuple[bytes, bytes]]:
    """
    The fields of a response whose body is encoded in C{encoding}, less
    C{Vary}'s addition.
    """
    edited: list[tuple[bytes, bytes]] = []
    for each in headers:
        name = each[0].lower()
        if name in _DROPPED_WHEN_COMPRESSED:
            continue
        if name == b"etag":
            weak = _weak(each[1])
            if weak is None:
                continue
            each = (each[0], weak)
        edited.append(each)
    edited.append((b"Content-Encoding", encoding.encode("ascii")))
    return edited


def encoded_not_modified(response: ResponseHead, stored_etag: bytes | None) -> ResponseHead:
    """
    Make the 304 that revalidates a response txproxy compressed apply to the
    compressed one, as a cache must before it freshens it with the 304 (RFC
    9111 section 4.3.4).

    The conditional request carried the stored, weakened, entity-tag, and
    the server compared it weakly (RFC 9110 13.1.2), answering with its own
    strong one: that tag is made weak as the stored one was. C{Vary} gains
    C{Accept-Encoding} as the stored response's did. A 304 whose tag is not
    the strong form of C{stored_etag} is left as it is.

    @param stored_etag: the entity-tag of the stored response.
    """
    changed = False
    edited: list[tuple[bytes, bytes]] = []
    for each in response.headers:
        name = each[0].lower()
        if name == b"etag":
            weak = _weak(each[1])
            if weak is not None and weak != each[1].strip(b" \t") and weak == stored_etag:
                each = (each[0], weak)
                changed = True
        edited.append(each)
    if not changed:
        return response
    if any(name.lower() == b"vary" for name, _ in edited):
        _with_vary(edited)
    return evolve(response, headers=tuple(edited))


def decide(
    settings: Compression,
    request: RequestHead,
    response: ResponseHead,
    headers: Headers | None = None,
) -> CompressionPlan | None:
    """
    Decide whether and how to compress a response of a route with compression.

    A response is left alone (L{None}) when it answers C{HEAD}; when its
    status is not 200-203 or 4xx/5xx; when it already has a
    C{Content-Encoding}; when the response or the request says
    C{Cache-Control: no-transform}; when its C{Content-Type} is not one of
    C{settings.types} (C{text/*} matching any text type, C{*/*} any; no
    C{Content-Type}, no match); or when its body is known to be shorter than
    C{settings.min_length}, or empty. A body of unknown length is compressed.
    Otherwise it gets a plan: encoded in the coding L{negotiate} chooses,
    or, for a client that accepts none, unencoded with C{Vary} added.

    @param settings: the route's compression.
    @param request: the request it answers.
    @param response: the response head from the server.
    @param headers: the fields to send, if not C{response.headers}: those
        L{txproxy.http.headers.forward_response_headers} made, so that
        the decision sees the route's own edits.
    @return: the plan, whose C{response} and C{headers} replace those given,
        or L{None} to send the response as it is.
    """
    if headers is None:
        headers = response.headers
    if request.method == b"HEAD" or response.status not in _COMPRESSED_STATUSES:
        return None
    length = response.content_length
    if length is not None and (length == 0 or length < settings.min_length):
        return None
    content_encoding = False
    content_type = None
    for name, value in headers:
        name = name.lower()
        if name == b"content-encoding":
            content_encoding = True
        elif name == b"content-type" and content_type is None:
            content_type = value
    if content_encoding or not _types(settings.types).match(content_type):
        return None
    if _no_transform(headers) or _no_transform(request.headers):
        return None
    encoding = negotiate(request, settings.algorithms)
    if encoding is None:
        edited = list(headers)
    else:
        edited = _encoded_headers(headers, encoding)
        length = None
    _with_vary(edited)
    head = evolve(response, headers=tuple(edited), content_length=length)
    return CompressionPlan(encoding, settings.level, head)
