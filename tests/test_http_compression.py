# -*- test-case-name: tests.test_http_compression -*-
"""
Tests for L{txproxy.http.compression}.
"""

from __future__ import annotations

import gzip
import hashlib
import random
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import brotli  # type: ignore[import-untyped, unused-ignore]
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txproxy.config import Compression
from txproxy.http import compression
from txproxy.http.compression import (
    ENCODINGS,
    BrotliEncoder,
    CompressionPlan,
    Encoder,
    GzipEncoder,
    ZstdEncoder,
    choose_encoding,
    decide,
    encoded_not_modified,
    negotiate,
)
from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.http.writing import ResponseFraming

try:
    import zstandard  # type: ignore[import-not-found, unused-ignore]
except ImportError:
    zstandard = None  # type: ignore[assignment, unused-ignore]

HTML = (b"Content-Type", b"text/html; charset=utf-8")
GZIP_AND_BR = (b"Accept-Encoding", b"gzip, deflate, br")


def _request(
    *headers: tuple[bytes, bytes], method: bytes = b"GET", version: bytes = b"1.1"
) -> RequestHead:
    """
    A request for C{/} with the given fields.
    """
    return RequestHead(method, b"/", version, headers, host=b"example.com")


def _response(
    *headers: tuple[bytes, bytes], status: int = 200, content_length: int | None = None
) -> ResponseHead:
    """
    A response with the given fields; a C{Content-Length} field is added for a known length.
    """
    if content_length is not None:
        headers += ((b"Content-Length", b"%d" % (content_length,)),)
    return ResponseHead(
        status, b"Reason", b"1.1", headers, content_length=content_length, chunked=False
    )


def _text(length: int, seed: int = 0) -> bytes:
    """
    Compressible text of C{length} bytes, like a page of words, not one repeated string.
    """
    generator = random.Random(seed)
    words = [
        bytes(generator.choices(b"abcdefghijklmnopqrstuvwxyz", k=generator.randint(2, 9)))
        for _ in range(2000)
    ]
    parts = []
    total = 0
    while total < length:
        line = b" ".join(generator.choices(words, k=12)) + b"\n"
        parts.append(line)
        total += len(line)
    return b"".join(parts)[:length]


class _StreamDecoder:
    """
    A streaming decoder of one coding: bytes in, the decoded bytes they complete out.
    """

    def __init__(self, encoding: str) -> None:
        self._decode: Callable[[bytes], bytes]
        if encoding == "gzip":
            self._decode = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
        elif encoding == "br":
            self._decode = self._brotli(brotli.Decompressor())
        else:
            self._decode = zstandard.ZstdDecompressor().decompressobj().decompress

    @staticmethod
    def _brotli(decompressor: brotli.Decompressor) -> Callable[[bytes], bytes]:
        """
        Decode with brotli's decompressor, which gives its output in pieces:
        the rest comes from calls with no input.
        """

        def decode(data: bytes) -> bytes:
            pieces = [decompressor.process(data)]
            while pieces[-1] and not decompressor.is_finished():
                pieces.append(decompressor.process(b""))
            return b"".join(pieces)

        return decode

    def decode(self, data: bytes) -> bytes:
        """
        Decode the next bytes of the stream.
        """
        return self._decode(data)


def _decompress(encoding: str, data: bytes) -> bytes:
    """
    Decode a whole body with the coding's own one-shot decoder.
    """
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "br":
        decoded: bytes = brotli.decompress(data)
        return decoded
    return _StreamDecoder("zstd").decode(data)


def _encoders() -> Iterator[Callable[[int], Encoder]]:
    """
    The encoder of each coding installed.
    """
    yield GzipEncoder
    yield BrotliEncoder
    if zstandard is not None:
        yield ZstdEncoder


class ChooseEncodingTests(SynchronousTestCase):
    """
    Tests for L{choose_encoding} and L{negotiate}.
    """

    def test_table(self) -> None:
        """
        The coding with the highest weight wins, C{br} before C{gzip} among
        equal weights; C{*} stands for codings not named, C{identity} wins
        when weighted above the best coding, names are case-insensitive, and
        members that are not a token with a weight from 0 to 1 are ignored.
        """
        br_gzip = ("br", "gzip")
        table: list[tuple[bytes | None, tuple[str, ...], str | None]] = [
            (None, br_gzip, None),
            (b"", br_gzip, None),
            (b"gzip", br_gzip, "gzip"),
            (b"br", br_gzip, "br"),
            (b"gzip, deflate, br", br_gzip, "br"),
            (b"gzip, br", ("gzip", "br"), "gzip"),
            (b"br;q=0.5, gzip", br_gzip, "gzip"),
            (b"br;q=0.5, gzip;q=0.6", br_gzip, "gzip"),
            (b"br;q=0.6, gzip;q=0.5", br_gzip, "br"),
            (b"GZIP", br_gzip, "gzip"),
            (b"Br ; Q=0.5 , gzip;q=0.4", br_gzip, "br"),
            (b"gzip;q=0.001", br_gzip, "gzip"),
            (b"gzip;q=1.000", br_gzip, "gzip"),
            (b"*", br_gzip, "br"),
            (b"*", ("gzip",), "gzip"),
            (b"*;q=0.5, gzip", br_gzip, "gzip"),
            (b"*, br;q=0", br_gzip, "gzip"),
            (b"gzip;q=0.5, *;q=0.8", br_gzip, "br"),
            (b"*;q=0", br_gzip, None),
            (b"br;q=0, gzip;q=0", br_gzip, None),
            (b"gzip;q=0", ("gzip",), None),
            (b"br", ("gzip",), None),
            (b"identity", br_gzip, None),
            (b"identity;q=0", br_gzip, None),
            (b"identity;q=0, gzip", br_gzip, "gzip"),
            (b"gzip;q=0.5, identity", br_gzip, None),
            (b"gzip;q=0.5, identity;q=0.5", br_gzip, "gzip"),
            (b"gzip;q=0.5, *", br_gzip, "br"),
            (b"gzip;q=0.5, *;q=0.4, br;q=0.2", br_gzip, "gzip"),
            (b"gzip;q=0.5, *;q=0.9, br;q=0.2", br_gzip, None),
            (b"gzip;q=0.5, *;q=0.9, identity;q=0.1", br_gzip, "br"),
            (b"compress, deflate", br_gzip, None),
            (b"x-gzip", br_gzip, "gzip"),
            (b"gzip;q=2", br_gzip, None),
            (b"gzip;q=-1", br_gzip, None),
            (b"gzip;q=abc", br_gzip, None),
            (b"gzip;q=", br_gzip, None),
            (b"gzip;q=nan", br_gzip, None),
            (b"gzip;q=2, br", br_gzip, "br"),
            (b", ,;q=1, gzip,", br_gzip, "gzip"),
            (b"gz ip", br_gzip, None),
            (b"g\xffzip, \xfe", br_gzip, None),
            (b"gzip, gzip;q=0", br_gzip, "gzip"),
            (b"gzip;q=0, gzip", br_gzip, None),
            (b"gzip, br", ("deflate", "gzip"), "gzip"),
        ]
        for accept_encoding, algorithms, expected in table:
            with self.subTest(accept_encoding=accept_encoding, algorithms=algorithms):
                self.assertEqual(choose_encoding(accept_encoding, algorithms), expected)

    def test_zstd(self) -> None:
        """
        C{zstd} is chosen like the others when C{zstandard} is installed.
        """
        if "zstd" not in ENCODINGS:
            raise SkipTest("zstandard is not installed")
        self.assertEqual(choose_encoding(b"gzip, br, zstd", ("zstd", "br", "gzip")), "zstd")
        self.assertEqual(choose_encoding(b"gzip, br, zstd", ("br", "zstd")), "br")
        self.assertEqual(choose_encoding(b"zstd;q=0.9, br;q=0.8", ("br", "zstd")), "zstd")

    def test_zstd_not_installed(self) -> None:
        """
        Without C{zstandard}, C{zstd} is never chosen, and the next coding is.
        """
        self.patch(compression, "_ENCODERS", {"br": BrotliEncoder, "gzip": GzipEncoder})
        self.assertEqual(choose_encoding(b"zstd, gzip", ("zstd", "gzip")), "gzip")
        self.assertIsNone(choose_encoding(b"zstd", ("zstd", "gzip")))

    def test_parse_cached(self) -> None:
        """
        Each distinct C{Accept-Encoding} value is parsed once, whatever the
        algorithms offered.
        """
        value = b"gzip;q=0.7, br;q=0.3, test-parse-cached"
        compression._weights.cache_clear()
        choose_encoding(value, ("br", "gzip"))
        choose_encoding(value, ("br",))
        choose_encoding(value, ("gzip",))
        info = compression._weights.cache_info()
        self.assertEqual((info.misses, info.hits), (1, 2))

    def test_negotiate_joins_fields(self) -> None:
        """
        L{negotiate} reads every C{Accept-Encoding} field of a request, as one
        comma-separated list.
        """
        request = _request((b"Accept-Encoding", b"br;q=0"), (b"accept-encoding", b"gzip"))
        self.assertEqual(negotiate(request, ("br", "gzip")), "gzip")
        self.assertIsNone(negotiate(_request(HTML), ("br", "gzip")))
        self.assertEqual(negotiate(_request((b"Accept-Encoding", b"*")), ("gzip",)), "gzip")


class DecideTests(SynchronousTestCase):
    """
    Tests for L{decide}: which responses are compressed, and their heads.
    """

    settings = Compression()

    def assertLeftAlone(
        self,
        response: ResponseHead,
        request: RequestHead | None = None,
        settings: Compression | None = None,
    ) -> None:
        """
        Assert that L{decide} leaves a response as it is.
        """
        request = request or _request(GZIP_AND_BR)
        self.assertIsNone(decide(settings or self.settings, request, response))

    def assertCompressed(
        self,
        response: ResponseHead,
        request: RequestHead | None = None,
        settings: Compression | None = None,
    ) -> CompressionPlan:
        """
        Assert that L{decide} compresses a response, and return its plan.
        """
        request = request or _request(GZIP_AND_BR)
        plan = decide(settings or self.settings, request, response)
        assert plan is not None
        self.assertIsNotNone(plan.encoding)
        return plan

    def test_compressed_head(self) -> None:
        """
        A compressed response loses C{Content-Length}, gains
        C{Content-Encoding} and C{Vary: Accept-Encoding}, and has its strong
        C{ETag} made weak; the other fields keep their order, and the head
        tells the writer its length is unknown.
        """
        response = _response(
            HTML,
            (b"ETag", b'"v1"'),
            (b"Cache-Control", b"max-age=60"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
            content_length=5000,
        )
        plan = self.assertCompressed(response)
        self.assertEqual(plan.encoding, "br")
        self.assertEqual(
            plan.headers,
            (
                HTML,
                (b"ETag", b'W/"v1"'),
                (b"Cache-Control", b"max-age=60"),
                (b"Set-Cookie", b"a=1"),
                (b"Set-Cookie", b"b=2"),
                (b"Content-Encoding", b"br"),
                (b"Vary", b"Accept-Encoding"),
            ),
        )
        self.assertEqual(plan.response.headers, plan.headers)
        self.assertIsNone(plan.response.content_length)
        self.assertEqual(
            (plan.response.status, plan.response.reason, plan.response.keep_alive),
            (200, b"Reason", True),
        )
        self.assertEqual(plan.level, 6)
        self.assertIsInstance(plan.encoder(), BrotliEncoder)

    def test_gzip_for_gzip_clients(self) -> None:
        """
        A client that accepts only C{gzip} gets it, named in C{Content-Encoding}.
        """
        plan = self.assertCompressed(_response(HTML), _request((b"Accept-Encoding", b"gzip")))
        self.assertEqual(plan.encoding, "gzip")
        self.assertIn((b"Content-Encoding", b"gzip"), plan.headers)
        self.assertIsInstance(plan.encoder(), GzipEncoder)

    def test_framing(self) -> None:
        """
        With its length gone, a compressed body is chunked to an HTTP/1.1
        client and sent until the connection closes to an HTTP/1.0 one.
        """
        response = _response(HTML, content_length=100_000)
        for version, chunked, close in ((b"1.1", True, False), (b"1.0", False, True)):
            request = _request(GZIP_AND_BR, version=version)
            plan = self.assertCompressed(response, request)
            framing = ResponseFraming.choose(request, plan.response, keep_alive=True)
            self.assertEqual((framing.chunked, framing.close), (chunked, close))

    def test_validators_and_ranges(self) -> None:
        """
        A weak C{ETag} stays as it is and one that is not an entity-tag is
        dropped; C{Accept-Ranges} and digests of the unencoded bytes go.
        """
        for etag, sent in ((b'W/"v1"', b'W/"v1"'), (b' "v2" ', b'W/"v2"'), (b"v3", None)):
            response = _response(HTML, (b"ETag", etag))
            plan = self.assertCompressed(response)
            etags = [value for name, value in plan.headers if name == b"ETag"]
            self.assertEqual(etags, [] if sent is None else [sent])
        response = _response(
            HTML,
            (b"Accept-Ranges", b"bytes"),
            (b"Content-MD5", b"Q2hlY2sgSW50ZWdyaXR5IQ=="),
            (b"Digest", b"sha-256=abc"),
            (b"Repr-Digest", b"sha-256=:abc=:"),
            (b"Content-Digest", b"sha-256=:abc=:"),
            (b"Last-Modified", b"Tue, 15 Nov 1994 12:45:26 GMT"),
        )
        plan = self.assertCompressed(response)
        self.assertEqual(
            [name for name, _ in plan.headers],
            [b"Content-Type", b"Last-Modified", b"Content-Encoding", b"Vary"],
        )

    def test_vary_merged(self) -> None:
        """
        C{Accept-Encoding} joins the first C{Vary} field, and is not added
        when a C{Vary} field already names it or is C{*}.
        """
        cases: list[tuple[Headers, Headers]] = [
            (((b"Vary", b"Origin"),), ((b"Vary", b"Origin, Accept-Encoding"),)),
            (((b"vary", b""),), ((b"vary", b"Accept-Encoding"),)),
            (((b"Vary", b"accept-encoding"),), ((b"Vary", b"accept-encoding"),)),
            (((b"Vary", b"Origin,ACCEPT-ENCODING "),), ((b"Vary", b"Origin,ACCEPT-ENCODING "),)),
            (((b"Vary", b"*"),), ((b"Vary", b"*"),)),
            (
                ((b"Vary", b"Origin"), (b"Vary", b"Accept-Encoding")),
                ((b"Vary", b"Origin"), (b"Vary", b"Accept-Encoding")),
            ),
            (
                ((b"Vary", b"Origin"), (b"Vary", b"Cookie")),
                ((b"Vary", b"Origin, Accept-Encoding"), (b"Vary", b"Cookie")),
            ),
        ]
        for vary, expected in cases:
            with self.subTest(vary=vary):
                plan = self.assertCompressed(_response(HTML, *vary))
                sent = tuple(each for each in plan.headers if each[0].lower() == b"vary")
                self.assertEqual(sent, expected)

    def test_client_accepting_none(self) -> None:
        """
        A response that would be compressed, to a client that accepts none of
        the codings, is sent unencoded with its length, gaining only C{Vary}.
        """
        response = _response(HTML, (b"ETag", b'"v1"'), content_length=5000)
        for request in (_request(), _request((b"Accept-Encoding", b"identity"))):
            plan = decide(self.settings, request, response)
            assert plan is not None
            self.assertIsNone(plan.encoding)
            self.assertIsNone(plan.encoder())
            self.assertEqual(plan.headers, response.headers + ((b"Vary", b"Accept-Encoding"),))
            self.assertEqual(plan.response.content_length, 5000)

    def test_head_request(self) -> None:
        """
        The response to C{HEAD} is left alone: it has no body to compress.
        """
        self.assertLeftAlone(_response(HTML), _request(GZIP_AND_BR, method=b"HEAD"))
        self.assertCompressed(_response(HTML), _request(GZIP_AND_BR, method=b"POST"))

    def test_statuses(self) -> None:
        """
        200-203 and 4xx/5xx bodies are compressed; 1xx, 101, 204, 205, 206
        and 3xx responses are not.
        """
        for status in (200, 201, 202, 203, 400, 404, 410, 500, 503):
            with self.subTest(status=status):
                self.assertCompressed(_response(HTML, status=status))
        for status in (100, 101, 103, 204, 205, 206, 300, 301, 302, 304, 307):
            with self.subTest(status=status):
                self.assertLeftAlone(_response(HTML, status=status))

    def test_already_encoded(self) -> None:
        """
        A response with any C{Content-Encoding} is left alone, in any case of its name.
        """
        for field in ((b"Content-Encoding", b"gzip"), (b"content-encoding", b"identity")):
            with self.subTest(field=field):
                self.assertLeftAlone(_response(HTML, field))

    def test_no_transform(self) -> None:
        """
        C{Cache-Control: no-transform} on the response or the request leaves
        the response alone; other directives do not.
        """
        for value in (b"no-transform", b"public, No-Transform", b"max-age=5,no-transform"):
            with self.subTest(value=value):
                self.assertLeftAlone(
                    _response(HTML, (b"Cache-Control", b"public"), (b"Cache-Control", value))
                )
                self.assertLeftAlone(
                    _response(HTML), _request(GZIP_AND_BR, (b"Cache-Control", value))
                )
        for value in (b"no-transformed", b"max-age=60, no-cache", b'private="no-transform"'):
            with self.subTest(value=value):
                self.assertCompressed(_response(HTML, (b"Cache-Control", value)))

    def test_media_types(self) -> None:
        """
        Only the configured media types are compressed, by type and subtype
        alone, case-insensitively; C{text/*} matches any text type and
        C{*/*} any type; a response without C{Content-Type} is left alone.
        """
        settings = Compression(types=["application/json", "text/*"])
        for content_type in (
            b"application/json",
            b"Application/JSON; charset=utf-8",
            b" application/json ;v=2",
            b"text/csv",
            b"TEXT/html",
        ):
            with self.subTest(content_type=content_type):
                response = _response((b"Content-Type", content_type))
                self.assertCompressed(response, settings=settings)
        for content_type in (
            b"application/javascript",
            b"application/json+x",
            b"image/png",
            b"textual/x",
            b"text",
            b"",
        ):
            with self.subTest(content_type=content_type):
                response = _response((b"Content-Type", content_type))
                self.assertLeftAlone(response, settings=settings)
        self.assertLeftAlone(_response(), settings=settings)
        everything = Compression(types=["*/*"])
        self.assertCompressed(_response((b"Content-Type", b"image/png")), settings=everything)
        self.assertLeftAlone(_response(), settings=everything)

    def test_default_types(self) -> None:
        """
        By default, HTML, CSS, plain text, JSON, JavaScript and SVG are compressed.
        """
        for content_type in (
            b"text/html",
            b"text/css",
            b"text/plain",
            b"application/json",
            b"application/javascript",
            b"image/svg+xml",
        ):
            with self.subTest(content_type=content_type):
                self.assertCompressed(_response((b"Content-Type", content_type)))
        self.assertLeftAlone(_response((b"Content-Type", b"image/jpeg")))

    def test_min_length(self) -> None:
        """
        A body known to be shorter than C{min_length}, or empty, is left
        alone; one of C{min_length} or of unknown length is compressed.
        """
        self.assertLeftAlone(_response(HTML, content_length=1023))
        self.assertCompressed(_response(HTML, content_length=1024))
        self.assertCompressed(_response(HTML))
        anything = Compression(min_length=0)
        self.assertCompressed(_response(HTML, content_length=1), settings=anything)
        self.assertLeftAlone(_response(HTML, content_length=0), settings=anything)

    def test_headers_to_send(self) -> None:
        """
        Given the fields to send, L{decide} judges and edits those rather than
        the server's, so that a route's edits count.
        """
        response = _response(HTML, content_length=5000)
        sent = (HTML, (b"X-Route", b"1"))
        plan = decide(self.settings, _request(GZIP_AND_BR), response, sent)
        assert plan is not None
        self.assertEqual(
            plan.headers, sent + ((b"Content-Encoding", b"br"), (b"Vary", b"Accept-Encoding"))
        )
        no_transform = sent + ((b"Cache-Control", b"no-transform"),)
        self.assertIsNone(decide(self.settings, _request(GZIP_AND_BR), response, no_transform))

    def test_algorithms_and_level(self) -> None:
        """
        The plan takes the route's order of algorithms and its level, and
        makes a new encoder for each call.
        """
        settings = Compression(algorithms=["gzip", "br"], level=1)
        plan = self.assertCompressed(_response(HTML), settings=settings)
        self.assertEqual((plan.encoding, plan.level), ("gzip", 1))
        first, second = plan.encoder(), plan.encoder()
        assert first is not None and second is not None
        self.assertIsNot(first, second)
        body = _text(50_000)
        self.assertEqual(first.compress(body), GzipEncoder(1).compress(body))
        self.assertNotEqual(GzipEncoder(1).compress(body), GzipEncoder(9).compress(body))


class CachedVariantTests(SynchronousTestCase):
    """
    Tests for L{CompressionPlan.applied_to} and L{encoded_not_modified}:
    what a cache stores of a compressed response, and how it is revalidated.
    """

    def test_applied_to_server_head(self) -> None:
        """
        The plan's edits apply to the server's own head, before the route's
        edits: encoded, it loses its length, gains the coding and Vary, and
        its ETag turns weak; unencoded, it gains Vary alone.
        """
        server = _response(HTML, (b"ETag", b'"a"'), (b"Server", b"origin"), content_length=5000)
        forwarded = _response(HTML, (b"ETag", b'"a"'), content_length=5000)
        plan = decide(Compression(), _request(GZIP_AND_BR), forwarded)
        assert plan is not None
        stored = plan.applied_to(server)
        self.assertEqual(
            stored.headers,
            (
                HTML,
                (b"ETag", b'W/"a"'),
                (b"Server", b"origin"),
                (b"Content-Encoding", b"br"),
                (b"Vary", b"Accept-Encoding"),
            ),
        )
        self.assertIsNone(stored.content_length)
        plan = decide(Compression(), _request(), forwarded)
        assert plan is not None
        stored = plan.applied_to(server)
        self.assertEqual(stored.headers[-1], (b"Vary", b"Accept-Encoding"))
        self.assertEqual(stored.content_length, 5000)

    def test_not_modified_weakened(self) -> None:
        """
        A 304 whose strong ETag is the one a stored compressed response had
        before it was weakened is made weak, and its Vary gains
        Accept-Encoding; any other 304 is left as it is.
        """
        not_modified = _response((b"ETag", b'"a"'), (b"Vary", b"Origin"), status=304)
        edited = encoded_not_modified(not_modified, b'W/"a"')
        self.assertEqual(
            edited.headers, ((b"ETag", b'W/"a"'), (b"Vary", b"Origin, Accept-Encoding"))
        )
        self.assertIs(encoded_not_modified(not_modified, b'"a"'), not_modified)
        self.assertIs(encoded_not_modified(not_modified, b'W/"b"'), not_modified)
        self.assertIs(encoded_not_modified(not_modified, None), not_modified)


class EncoderTests(SynchronousTestCase):
    """
    Tests for L{GzipEncoder}, L{BrotliEncoder} and L{ZstdEncoder}.
    """

    def test_round_trips(self) -> None:
        """
        A body fed in chunks of any size decodes, with the coding's own
        decoder, to the body.
        """
        small = _text(6000, seed=1)
        large = _text(400_000, seed=2)
        for make in _encoders():
            for size in (1, 13, 512, 4096, 16_384, 65_536, 1 << 20):
                body = small if size < 512 else large
                with self.subTest(encoder=make, size=size):
                    encoder = make(6)
                    pieces = [
                        encoder.compress(body[i : i + size]) for i in range(0, len(body), size)
                    ]
                    compressed = b"".join(pieces) + encoder.finish()
                    self.assertEqual(_decompress(encoder.encoding, compressed), body)
                    if size >= 512:
                        self.assertLess(len(compressed), len(body) // 2)

    def test_gzip_format(self) -> None:
        """
        The gzip coding starts with the gzip magic and ends with the
        trailer that C{gzip.decompress} checks: a wrong CRC fails.
        """
        encoder = GzipEncoder(6)
        compressed = encoder.compress(b"hello " * 100) + encoder.finish()
        self.assertEqual(compressed[:3], b"\x1f\x8b\x08")
        broken = compressed[:-8] + bytes([compressed[-8] ^ 1]) + compressed[-7:]
        self.assertRaises(gzip.BadGzipFile, gzip.decompress, broken)

    def test_decodable_after_each_chunk(self) -> None:
        """
        After each chunk, the bytes produced so far decode to every byte of
        the body given so far: nothing waits in the encoder.
        """
        body = _text(300_000, seed=3)
        sizes = [1, 2, 10, 100, 1000, 5000, 40_000, 100_000, 3]
        for make in _encoders():
            with self.subTest(encoder=make):
                encoder = make(6)
                decoder = _StreamDecoder(encoder.encoding)
                offset = 0
                for size in sizes * 2:
                    chunk = body[offset : offset + size]
                    offset += size
                    self.assertEqual(decoder.decode(encoder.compress(chunk)), chunk)
                self.assertEqual(decoder.decode(encoder.finish()), b"")

    def test_empty_chunks(self) -> None:
        """
        An empty chunk gives no bytes, and an empty body is a valid stream of
        nothing.
        """
        for make in _encoders():
            with self.subTest(encoder=make):
                encoder = make(6)
                self.assertEqual(encoder.compress(b""), b"")
                last = encoder.finish()
                self.assertNotEqual(last, b"")
                self.assertEqual(_decompress(encoder.encoding, last), b"")

    def test_levels(self) -> None:
        """
        Level 9 compresses smaller than level 1, and both decode.
        """
        body = _text(300_000, seed=4)
        for make in _encoders():
            with self.subTest(encoder=make):
                sizes = []
                for level in (1, 9):
                    encoder = make(level)
                    compressed = encoder.compress(body) + encoder.finish()
                    self.assertEqual(_decompress(encoder.encoding, compressed), body)
                    sizes.append(len(compressed))
                self.assertLess(sizes[1], sizes[0])

    def test_encoding_names(self) -> None:
        """
        Each encoder names its coding as sent in C{Content-Encoding}, and
        L{ENCODINGS} lists those installed.
        """
        self.assertEqual(GzipEncoder(6).encoding, "gzip")
        self.assertEqual(BrotliEncoder(6).encoding, "br")
        self.assertLessEqual({"br", "gzip"}, ENCODINGS)
        self.assertEqual("zstd" in ENCODINGS, zstandard is not None)
        if zstandard is not None:
            self.assertEqual(ZstdEncoder(6).encoding, "zstd")


class LargeBodyTests(SynchronousTestCase):
    """
    A body far larger than any buffer streams through each encoder.
    """

    size = 64 << 20
    chunk_size = 64 << 10

    def chunks(self) -> Iterator[bytes]:
        """
        The body, C{size} bytes of text made chunk by chunk and never whole:
        slices of a 1 MiB text, each with its number in front.
        """
        text = _text(1 << 20, seed=5)
        step = self.chunk_size - 8
        for number in range(self.size // self.chunk_size):
            start = (number * 7919) % (len(text) - step)
            yield b"%08d" % (number,) + text[start : start + step]

    def stream(self, encoder: Encoder) -> None:
        """
        Stream the body through C{encoder} and a streaming decoder: each
        chunk's bytes decode to the chunk, the whole decodes to a body of the
        same size and hash, and the memory Python holds meanwhile stays far
        below the body's size.
        """
        decoder = _StreamDecoder(encoder.encoding)
        sent, received = hashlib.sha256(), hashlib.sha256()
        sent_length = received_length = compressed_length = 0
        tracemalloc.start()
        try:
            for chunk in self.chunks():
                sent.update(chunk)
                sent_length += len(chunk)
                compressed = encoder.compress(chunk)
                compressed_length += len(compressed)
                decoded = decoder.decode(compressed)
                self.assertEqual(len(decoded), len(chunk))
                received.update(decoded)
                received_length += len(decoded)
            last = encoder.finish()
            compressed_length += len(last)
            received.update(decoder.decode(last))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual((received_length, sent_length), (self.size, self.size))
        self.assertEqual(received.hexdigest(), sent.hexdigest())
        self.assertLess(compressed_length, self.size // 2)
        self.assertLess(peak, 8 << 20)

    def test_gzip(self) -> None:
        """
        64 MiB stream through gzip in 64 KiB chunks.
        """
        self.stream(GzipEncoder(6))

    def test_brotli(self) -> None:
        """
        64 MiB stream through brotli in 64 KiB chunks.
        """
        self.stream(BrotliEncoder(6))

    def test_zstd(self) -> None:
        """
        64 MiB stream through zstd in 64 KiB chunks.
        """
        if zstandard is None:
            raise SkipTest("zstandard is not installed")
        self.stream(ZstdEncoder(6))
