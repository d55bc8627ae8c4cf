"""
Integration tests for routes with a cache: clients, txproxy, its admin API, an origin on loopback.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Generator

import brotli  # type: ignore[import-untyped, unused-ignore]
from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tests.h2client import H2Client, H2Response, connect_h2
from tests.loopback import RawClient, connect_raw, split_response, start_proxy
from txproxy import config
from txproxy.http.caching import RouteCache
from txproxy.http.listener import HTTPFactory
from txproxy.service import ProxyService, makeService

Fields = dict[bytes, list[bytes]]

JSON = json.dumps({"items": [{"id": n, "name": f"item {n}"} for n in range(300)]}).encode()


@define
class Page:
    """
    What the origin answers for one path.

    @ivar hold: whether C{GET}s wait for L{CountingOrigin.release}.
    """

    body: bytes = b"hello"
    headers: list[tuple[bytes, bytes]] = field(factory=lambda: [(b"Cache-Control", b"max-age=60")])
    etag: bytes | None = None
    last_modified: bytes | None = None
    hold: bool = False


def _weak_match(tags: bytes, etag: bytes) -> bool:
    """
    Whether C{If-None-Match} C{tags} match C{etag} by weak comparison.
    """
    wanted = etag.removeprefix(b"W/")
    return any(tag.strip().removeprefix(b"W/") in (wanted, b"*") for tag in tags.split(b","))


class CountingOrigin(Resource):
    """
    An origin that records every request it gets and answers each path with
    its L{Page}: validators and preconditions included, so that it answers
    conditional requests with 304. Unsafe methods get C{200 changed}.

    @ivar requests: C{(method, target, fields)} of every request, in order.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[bytes, Page] = {}
        self.requests: list[tuple[bytes, bytes, Fields]] = []
        self.held: list[tuple[Request, bytes]] = []

    def count(self, target: bytes, method: bytes = b"GET") -> int:
        """
        How many C{method} requests for C{target} came.
        """
        return sum(1 for each in self.requests if each[:2] == (method, target))

    def last(self, target: bytes) -> Fields:
        """
        The fields of the last request for C{target}.
        """
        return [fields for _, each, fields in self.requests if each == target][-1]

    def release(self) -> None:
        """
        Answer the held requests.
        """
        held, self.held = self.held, []
        for request, body in held:
            request.write(body)
            request.finish()

    def render(self, request: Request) -> bytes | int:
        fields: Fields = {}
        for name, values in request.requestHeaders.getAllRawHeaders():
            fields.setdefault(name.lower(), []).extend(values)
        self.requests.append((request.method, request.uri, fields))
        if request.method not in (b"GET", b"HEAD"):
            return b"changed"
        page = self.pages.get(request.uri)
        if page is None:
            request.setResponseCode(404)
            return b"not found"
        headers = request.responseHeaders
        for name, value in page.headers:
            headers.addRawHeader(name, value)
        if page.etag is not None:
            headers.setRawHeaders(b"etag", [page.etag])
        if page.last_modified is not None:
            headers.setRawHeaders(b"last-modified", [page.last_modified])
        if_none_match = request.getHeader(b"if-none-match")
        if_modified_since = request.getHeader(b"if-modified-since")
        if (page.etag is not None and if_none_match and _weak_match(if_none_match, page.etag)) or (
            page.etag is None
            and page.last_modified is not None
            and if_modified_since == page.last_modified
        ):
            request.setResponseCode(304)
            return b""
        if page.hold:
            request.setHeader(b"content-length", b"%d" % len(page.body))
            self.held.append((request, page.body))
            return NOT_DONE_YET
        return page.body


def dechunk(data: bytes) -> bytes:
    """
    The body of a chunked message body.
    """
    body = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += data[:size]
        data = data[size + 2 :]


def response(data: bytes) -> tuple[int, Fields, bytes]:
    """
    The status, fields and body of one raw response, its chunks undone.
    """
    status, headers, rest = split_response(data)
    if headers.get(b"transfer-encoding") == [b"chunked"]:
        rest = dechunk(rest)
    return status, headers, rest


def cache_status(headers: Fields) -> bytes:
    """
    The C{Cache-Status} txproxy gave a response.
    """
    [value] = headers[b"cache-status"]
    return value


@inlineCallbacks
def until(condition: Callable[[], bool]) -> Generator[Deferred[None], None, None]:
    """
    Wait, ten seconds at most, for C{condition()} to hold.
    """
    for _ in range(1000):
        if condition():
            return
        yield deferLater(reactor, 0.01)
    raise AssertionError("condition never held")


class CacheProxyTests(TestCase):
    """
    Routes with a cache, built by L{makeService}, in front of a L{CountingOrigin}.
    """

    def setUp(self) -> None:
        self.origin = CountingOrigin()
        site = Site(self.origin)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        self.origin_port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.stop_origin)

    def stop_origin(self) -> Deferred[None] | None:
        """
        Stop the origin listening, once.
        """
        port, self.origin_port = self.origin_port, None  # type: ignore[assignment]
        if port is None:
            return None
        return port.stopListening()  # type: ignore[return-value]

    def proxy(
        self,
        cache: config.Cache | None = None,
        compression: config.Compression | None = None,
        admin: bool = False,
        **listener: object,
    ) -> int:
        """
        Start txproxy with one route that caches, over the origin, and return its port.
        """
        self.service, port = start_proxy(
            self, self.configuration(cache, compression, admin, **listener)
        )
        return port

    def configuration(
        self,
        cache: config.Cache | None = None,
        compression: config.Compression | None = None,
        admin: bool = False,
        **listener: object,
    ) -> config.Proxy:
        """
        A configuration of one listener with one route that caches, over the origin.
        """
        pool = config.Pool(
            "web",
            servers=[config.Server(f"127.0.0.1:{self.origin_port.getHost().port}")],
            # No kept connections: a stopped origin is seen as down at once.
            keepalive=0,
            retries=0,
        )
        route = config.Route(pool, cache=cache or config.Cache(), compression=compression)
        return config.Proxy(
            listeners=[
                config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[route], **listener)
            ],
            admin=config.Admin("tcp:0:interface=127.0.0.1") if admin else None,
        )

    @property
    def route_cache(self) -> RouteCache:
        """
        The cache of the proxy's one route.
        """
        factory = self.service.listeners[0].factory
        assert isinstance(factory, HTTPFactory)
        [cache] = factory._route_caches.values()
        return cache

    @inlineCallbacks
    def get(
        self,
        port: int,
        target: bytes = b"/a",
        headers: bytes = b"",
        method: bytes = b"GET",
        body: bytes = b"",
    ) -> Generator[Deferred[object], object, tuple[int, Fields, bytes]]:
        """
        Send one request on a new connection; return the response's status,
        fields and body.
        """
        client = yield connect_raw(port)
        assert isinstance(client, RawClient)
        if body:
            headers += b"Content-Length: %d\r\n" % len(body)
        client.transport.write(
            b"%s %s HTTP/1.1\r\nHost: example.com\r\n%sConnection: close\r\n\r\n%s"
            % (method, target, headers, body)
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        return response(data)

    @inlineCallbacks
    def test_miss_then_hit(self) -> Generator[Deferred[object], object, None]:
        """
        The first GET goes to the origin and is stored; the second is
        answered from the cache with C{Age}, and the origin sees one request.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        port = self.proxy()
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(cache_status(headers), b"txproxy; fwd=uri-miss; fwd-status=200; stored")
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"hello"))
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit; ttl="))
        self.assertIn(headers[b"age"][0], (b"0", b"1"))
        self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertEqual(self.origin.count(b"/a"), 1)

    @inlineCallbacks
    def test_hit_over_http2(self) -> Generator[Deferred[object], object, None]:
        """
        A response stored through HTTP/1.1 answers an HTTP/2 request for the
        same URL, and the other way round.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        self.origin.pages[b"/b"] = Page(b"world")
        port = self.proxy(h2c=True)
        yield self.get(port)
        client = yield connect_h2(port)
        assert isinstance(client, H2Client)
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        answer = yield client.request(b"/a").done
        assert isinstance(answer, H2Response)
        self.assertEqual((answer.status, bytes(answer.body)), (200, b"hello"))
        self.assertTrue(answer.header(b"cache-status")[0].startswith(b"txproxy; hit"))
        first = yield client.request(b"/b").done
        assert isinstance(first, H2Response)
        self.assertEqual(first.header(b"cache-status")[0][:22], b"txproxy; fwd=uri-miss;")
        status, headers, body = yield self.get(port, b"/b")
        self.assertEqual((status, body), (200, b"world"))
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        self.assertEqual((self.origin.count(b"/a"), self.origin.count(b"/b")), (1, 1))

    @inlineCallbacks
    def test_revalidation_updates_headers(self) -> Generator[Deferred[object], object, None]:
        """
        A stale response is revalidated with the stored validators; the
        server's 304 freshens it, its fields replace the stored ones, and
        the stored body is served.
        """
        self.origin.pages[b"/a"] = Page(
            b"hello",
            [(b"Cache-Control", b"max-age=0"), (b"X-Version", b"1")],
            etag=b'"v1"',
            last_modified=b"Mon, 01 Jan 2024 00:00:00 GMT",
        )
        port = self.proxy()
        yield self.get(port)
        self.origin.pages[b"/a"].headers = [(b"Cache-Control", b"max-age=60"), (b"X-Version", b"2")]
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(headers[b"x-version"], [b"2"])
        self.assertTrue(cache_status(headers).startswith(b"txproxy; fwd=stale; fwd-status=304;"))
        self.assertTrue(cache_status(headers).endswith(b"; stored"))
        sent = self.origin.last(b"/a")
        self.assertEqual(sent[b"if-none-match"], [b'"v1"'])
        self.assertEqual(sent[b"if-modified-since"], [b"Mon, 01 Jan 2024 00:00:00 GMT"])
        # Fresh now: the next one is a hit.
        status, headers, body = yield self.get(port)
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        self.assertEqual(headers[b"x-version"], [b"2"])
        self.assertEqual(self.origin.count(b"/a"), 2)

    @inlineCallbacks
    def test_client_conditional_from_cache(self) -> Generator[Deferred[object], object, None]:
        """
        A client's C{If-None-Match} that matches a fresh stored response is
        answered 304 from the cache, without its body.
        """
        self.origin.pages[b"/a"] = Page(b"hello", etag=b'"v1"')
        port = self.proxy()
        yield self.get(port)
        status, headers, body = yield self.get(port, headers=b'If-None-Match: "v1"\r\n')
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(headers[b"etag"], [b'"v1"'])
        self.assertNotIn(b"content-length", headers)
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        status, _, body = yield self.get(port, headers=b'If-None-Match: "v0"\r\n')
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(self.origin.count(b"/a"), 1)

    @inlineCallbacks
    def test_stale_if_error_origin_down(self) -> Generator[Deferred[object], object, None]:
        """
        With the origin down, a stale response that C{stale-if-error} covers
        is served in place of txproxy's 502; without one, the 502 comes with
        C{Cache-Status}.
        """
        self.origin.pages[b"/a"] = Page(
            b"hello", [(b"Cache-Control", b"max-age=0, stale-if-error=60")]
        )
        port = self.proxy()
        status, headers, _ = yield self.get(port)
        self.assertEqual(status, 200)
        yield self.stop_origin()
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"hello"))
        self.assertTrue(cache_status(headers).startswith(b"txproxy; fwd=stale; ttl="))
        self.assertTrue(cache_status(headers).endswith(b"; detail=stale-if-error"))
        status, headers, _ = yield self.get(port, b"/never")
        self.assertIn(status, (502, 503))
        self.assertEqual(cache_status(headers), b"txproxy; fwd=uri-miss")

    @inlineCallbacks
    def test_stale_while_revalidate(self) -> Generator[Deferred[object], object, None]:
        """
        A response within C{stale-while-revalidate} is served stale at once,
        and revalidated in the background: the next request gets the new one.
        """
        self.origin.pages[b"/a"] = Page(
            b"first",
            [(b"Cache-Control", b"max-age=0, stale-while-revalidate=60")],
            etag=b'"1"',
        )
        port = self.proxy()
        yield self.get(port)
        self.origin.pages[b"/a"] = Page(
            b"second",
            [(b"Cache-Control", b"max-age=0, stale-while-revalidate=60")],
            etag=b'"2"',
        )
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"first"))
        self.assertIn(b"detail=stale-while-revalidate", cache_status(headers))
        yield until(lambda: not self.route_cache.pending.filling("http://example.com/a"))
        self.assertEqual(self.origin.count(b"/a"), 2)
        self.assertEqual(self.origin.last(b"/a")[b"if-none-match"], [b'"1"'])
        status, headers, body = yield self.get(port)
        self.assertEqual((status, body), (200, b"second"))
        yield until(lambda: not self.route_cache.pending.filling("http://example.com/a"))

    @inlineCallbacks
    def test_collapsed_misses(self) -> Generator[Deferred[object], object, None]:
        """
        Fifty concurrent misses of one URL send one request to the origin;
        the others wait for it and are answered from the cache.
        """
        self.origin.pages[b"/a"] = Page(b"hello", hold=True)
        port = self.proxy()
        clients = []
        for _ in range(50):
            client = yield connect_raw(port)
            assert isinstance(client, RawClient)
            client.transport.write(
                b"GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
            )
            clients.append(client)
        key = "http://example.com/a"
        yield until(
            lambda: (
                len(self.origin.held) == 1
                and len(self.route_cache.pending._waiting.get(key, ())) == 49
            )
        )
        self.origin.release()
        results = yield gatherResults([client.closed for client in clients])
        assert isinstance(results, list)
        answers = [response(data) for data in results]
        self.assertEqual({(status, body) for status, _, body in answers}, {(200, b"hello")})
        statuses = sorted(cache_status(headers) for _, headers, _ in answers)
        self.assertEqual(statuses.count(b"txproxy; fwd=uri-miss; fwd-status=200; stored"), 1)
        self.assertEqual(
            sum(b"fwd=miss; fwd-status=200" in each and b"collapsed" in each for each in statuses),
            49,
        )
        self.assertEqual(len(self.origin.requests), 1)

    @inlineCallbacks
    def test_eviction_by_size(self) -> Generator[Deferred[object], object, None]:
        """
        A store full to C{max_size} drops its least recently used response for a new one.
        """
        for name in (b"/1", b"/2", b"/3"):
            self.origin.pages[name] = Page(b"x" * 4000)
        port = self.proxy(config.Cache(max_size=10_000, max_object_size=5_000))
        for name in (b"/1", b"/2", b"/1", b"/3"):
            yield self.get(port, name)
        self.assertEqual([self.origin.count(name) for name in (b"/1", b"/2", b"/3")], [1, 1, 1])
        self.assertLessEqual(self.route_cache.store.size, 10_000)
        # /2 was the least recently used: it went for /3.
        _, headers, _ = yield self.get(port, b"/1")
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        _, headers, _ = yield self.get(port, b"/2")
        self.assertTrue(cache_status(headers).startswith(b"txproxy; fwd=uri-miss"))
        self.assertEqual(self.origin.count(b"/2"), 2)

    @inlineCallbacks
    def test_too_large_streams_unstored(self) -> Generator[Deferred[object], object, None]:
        """
        A response over C{max_object_size} reaches the client whole and is
        not stored, whether its length is known at its head or not.
        """
        big = bytes(range(256)) * 100
        self.origin.pages[b"/big"] = Page(big)
        port = self.proxy(config.Cache(max_size=100_000, max_object_size=10_000))
        for _ in range(2):
            status, headers, body = yield self.get(port, b"/big")
            self.assertEqual((status, body), (200, big))
            self.assertEqual(
                cache_status(headers),
                b"txproxy; fwd=uri-miss; fwd-status=200; stored=?0; detail=too-large",
            )
        self.assertEqual(self.origin.count(b"/big"), 2)
        self.assertEqual(len(self.route_cache.store), 0)

    @inlineCallbacks
    def test_too_large_compressed_unstored(self) -> Generator[Deferred[object], object, None]:
        """
        A compressed body, whose length is not known until it ends, is
        dropped from the store once it passes C{max_object_size}, and the
        client still gets it whole.
        """
        body = bytes(range(256)) * 400
        self.origin.pages[b"/big"] = Page(body, [(b"Content-Type", b"text/plain")])
        port = self.proxy(
            config.Cache(max_size=100_000, max_object_size=10_000),
            config.Compression(types=("text/plain",), algorithms=("gzip",)),
        )
        status, headers, received = yield self.get(port, b"/big", b"Accept-Encoding: gzip\r\n")
        self.assertEqual((status, gzip.decompress(received)), (200, body))
        self.assertEqual(len(self.route_cache.store), 0)

    @inlineCallbacks
    def test_purge_through_admin(self) -> Generator[Deferred[object], object, None]:
        """
        C{DELETE /cache?url=} and C{?prefix=} on the admin API remove stored
        responses and answer with how many; what was purged is fetched again.
        """
        for name in (b"/a", b"/b/1", b"/b/2"):
            self.origin.pages[name] = Page(b"hello")
        port = self.proxy(admin=True)
        for name in (b"/a", b"/b/1", b"/b/2"):
            yield self.get(port, name)
        assert self.service.admin is not None and self.service.admin.port is not None
        admin = self.service.admin.port.getHost().port

        @inlineCallbacks
        def purge(query: bytes) -> Generator[Deferred[object], object, tuple[int, object]]:
            client = yield connect_raw(admin)
            assert isinstance(client, RawClient)
            client.transport.write(
                b"DELETE /cache?%s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % query
            )
            data = yield client.closed
            assert isinstance(data, bytes)
            status, _, body = response(data)
            return status, json.loads(body)

        answer = yield purge(b"url=http://example.com/a")
        self.assertEqual(answer, (200, {"removed": 1, "url": "http://example.com/a"}))
        answer = yield purge(b"prefix=http://EXAMPLE.com:80/b/")
        self.assertEqual(answer, (200, {"removed": 2, "prefix": "http://EXAMPLE.com:80/b/"}))
        answer = yield purge(b"url=http://example.com/a")
        self.assertEqual(answer, (200, {"removed": 0, "url": "http://example.com/a"}))
        _, headers, _ = yield self.get(port, b"/b/1")
        self.assertTrue(cache_status(headers).startswith(b"txproxy; fwd=uri-miss"))
        self.assertEqual(self.origin.count(b"/b/1"), 2)

    @inlineCallbacks
    def test_head_from_stored_get(self) -> Generator[Deferred[object], object, None]:
        """
        A C{HEAD} is answered from a stored C{GET}: its fields, no body.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        port = self.proxy()
        yield self.get(port)
        status, headers, body = yield self.get(port, method=b"HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        self.assertEqual(len(self.origin.requests), 1)

    @inlineCallbacks
    def test_range_from_cache(self) -> Generator[Deferred[object], object, None]:
        """
        A C{Range} request on a stored whole response gets 206 with that range.
        """
        self.origin.pages[b"/a"] = Page(b"0123456789")
        port = self.proxy()
        yield self.get(port)
        status, headers, body = yield self.get(port, headers=b"Range: bytes=2-5\r\n")
        self.assertEqual((status, body), (206, b"2345"))
        self.assertEqual(headers[b"content-range"], [b"bytes 2-5/10"])
        self.assertEqual(self.origin.count(b"/a"), 1)

    @inlineCallbacks
    def test_post_invalidates(self) -> Generator[Deferred[object], object, None]:
        """
        A successful C{POST} to a URL removes what is stored for it: the next
        C{GET} goes to the origin.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        port = self.proxy()
        yield self.get(port)
        status, headers, body = yield self.get(port, method=b"POST", body=b"hi")
        self.assertEqual((status, body), (200, b"changed"))
        self.assertEqual(cache_status(headers), b"txproxy; fwd=method; fwd-status=200")
        _, headers, _ = yield self.get(port)
        self.assertTrue(cache_status(headers).startswith(b"txproxy; fwd=uri-miss"))
        self.assertEqual(self.origin.count(b"/a"), 2)

    @inlineCallbacks
    def test_only_if_cached(self) -> Generator[Deferred[object], object, None]:
        """
        C{only-if-cached} with nothing stored gets 504 from txproxy, with
        C{Cache-Status}; the origin sees nothing.
        """
        port = self.proxy()
        status, headers, _ = yield self.get(port, headers=b"Cache-Control: only-if-cached\r\n")
        self.assertEqual(status, 504)
        self.assertEqual(cache_status(headers), b"txproxy; fwd=uri-miss")
        self.assertEqual(self.origin.requests, [])

    @inlineCallbacks
    def test_compressed_variants(self) -> Generator[Deferred[object], object, None]:
        """
        With compression on the route, each coding's variant is stored once
        and served to every client that negotiates it: gzip, br and identity
        clients each get a body they decode to the origin's.
        """
        self.origin.pages[b"/j"] = Page(
            JSON,
            [(b"Content-Type", b"application/json"), (b"Cache-Control", b"max-age=60")],
            etag=b'"j1"',
        )
        port = self.proxy(compression=config.Compression())
        decoders: dict[bytes, Callable[[bytes], bytes]] = {
            b"gzip": gzip.decompress,
            b"br": brotli.decompress,
            b"": lambda body: body,
        }
        clients = [
            (b"Accept-Encoding: gzip\r\n", b"gzip"),
            (b"Accept-Encoding: br, gzip\r\n", b"br"),
            (b"", b""),
            (b"Accept-Encoding: gzip;q=1, deflate\r\n", b"gzip"),
            (b"Accept-Encoding: br\r\n", b"br"),
            (b"Accept-Encoding: identity\r\n", b""),
        ]
        for index, (sent, coding) in enumerate(clients):
            status, headers, body = yield self.get(port, b"/j", sent)
            self.assertEqual(status, 200)
            self.assertEqual(headers.get(b"content-encoding", [b""]), [coding])
            self.assertEqual(decoders[coding](body), JSON)
            self.assertIn(b"Accept-Encoding", headers[b"vary"][0])
            expected = b"txproxy; fwd=" if index < 3 else b"txproxy; hit"
            self.assertTrue(cache_status(headers).startswith(expected), cache_status(headers))
            if coding:
                self.assertEqual(headers[b"etag"], [b'W/"j1"'])
        self.assertEqual(self.origin.count(b"/j"), 3)
        sent = sorted(fields[b"accept-encoding"][0] for _, _, fields in self.origin.requests)
        self.assertEqual(sent, [b"br", b"gzip", b"identity"])
        self.assertEqual(len(self.route_cache.store), 3)

    @inlineCallbacks
    def test_compressed_variant_revalidated(self) -> Generator[Deferred[object], object, None]:
        """
        A compressed variant, stored with a weakened C{ETag}, is freshened by
        the server's 304 (which has the strong one) rather than fetched again.
        """
        self.origin.pages[b"/j"] = Page(
            JSON,
            [(b"Content-Type", b"application/json"), (b"Cache-Control", b"max-age=0")],
            etag=b'"j1"',
        )
        port = self.proxy(compression=config.Compression(algorithms=("gzip",)))
        yield self.get(port, b"/j", b"Accept-Encoding: gzip\r\n")
        status, headers, body = yield self.get(port, b"/j", b"Accept-Encoding: gzip\r\n")
        self.assertEqual((status, gzip.decompress(body)), (200, JSON))
        self.assertIn(b"fwd=stale; fwd-status=304", cache_status(headers))
        self.assertEqual(self.origin.last(b"/j")[b"if-none-match"], [b'W/"j1"'])
        self.assertEqual(self.origin.count(b"/j"), 2)

    @inlineCallbacks
    def test_head_twice(self) -> Generator[Deferred[object], object, None]:
        """
        A C{HEAD} that misses is fetched as a C{GET} and stored, as C{curl -I}
        twice shows: a miss, then a hit; neither has a body.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        port = self.proxy()
        client = yield connect_raw(port)
        assert isinstance(client, RawClient)
        client.transport.write(b"HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n")
        yield client.wait_for(b"\r\n\r\n")
        client.transport.write(
            b"HEAD /a HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        first, second = data.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.endswith(b"\r\n\r\n") and second.endswith(b"\r\n\r\n"))
        _, first_headers, _ = split_response(b"HTTP/1.1 " + first)
        _, second_headers, _ = split_response(b"HTTP/1.1 " + second)
        self.assertEqual(
            cache_status(first_headers), b"txproxy; fwd=uri-miss; fwd-status=200; stored"
        )
        self.assertTrue(cache_status(second_headers).startswith(b"txproxy; hit"))
        self.assertEqual(second_headers[b"content-length"], [b"5"])
        self.assertEqual([each[:2] for each in self.origin.requests], [(b"GET", b"/a")])

    @inlineCallbacks
    def test_reload_keeps_cache(self) -> Generator[Deferred[object], object, None]:
        """
        A reload of the same configuration keeps what the route stored, and
        the admin API purges it.
        """
        self.origin.pages[b"/a"] = Page(b"hello")
        port = self.proxy(admin=True)
        yield self.get(port)
        self.service.reload(self.configuration(admin=True))
        yield self.service.reloaded()
        _, headers, _ = yield self.get(port)
        self.assertTrue(cache_status(headers).startswith(b"txproxy; hit"))
        assert self.service.admin is not None and self.service.admin.port is not None
        client = yield connect_raw(self.service.admin.port.getHost().port)
        assert isinstance(client, RawClient)
        client.transport.write(
            b"DELETE /cache?url=http://example.com/a HTTP/1.1\r\nHost: a\r\n"
            b"Connection: close\r\n\r\n"
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        self.assertEqual(json.loads(response(data)[2])["removed"], 1)

    @inlineCallbacks
    def test_purge_without_cache(self) -> Generator[Deferred[object], object, None]:
        """
        With no route that caches, the admin API answers C{DELETE /cache} with 404.
        """
        route = config.Route(config.Pool("web", servers=[config.Server("127.0.0.1:1")]))
        service = makeService(
            config.Proxy(
                listeners=[config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[route])],
                admin=config.Admin("tcp:0:interface=127.0.0.1"),
            ),
            reactor,
        )
        assert isinstance(service, ProxyService)
        service.startService()
        self.addCleanup(service.stopService)
        assert service.admin is not None and service.admin.port is not None
        client = yield connect_raw(service.admin.port.getHost().port)
        assert isinstance(client, RawClient)
        client.transport.write(
            b"DELETE /cache?url=http://a/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        status, _, body = response(data)
        self.assertEqual((status, json.loads(body)["error"]), (404, "no cache is configured"))

    @inlineCallbacks
    def test_collapsed_on_one_http2_connection(self) -> Generator[Deferred[object], object, None]:
        """
        Streams of one HTTP/2 connection asking for the same URL at once send
        one request to the origin; the waiting ones are answered from the
        cache as the first one's response is stored.
        """
        self.origin.pages[b"/a"] = Page(b"hello", hold=True)
        port = self.proxy(h2c=True)
        client = yield connect_h2(port)
        assert isinstance(client, H2Client)
        self.addCleanup(lambda: client.transport.loseConnection() or client.closed)
        responses = [client.request(b"/a") for _ in range(5)]
        key = "http://example.com/a"
        yield until(
            lambda: (
                len(self.origin.held) == 1
                and len(self.route_cache.pending._waiting.get(key, ())) == 4
            )
        )
        self.origin.release()
        answers = yield gatherResults([each.done for each in responses])
        assert isinstance(answers, list)
        self.assertEqual({(each.status, bytes(each.body)) for each in answers}, {(200, b"hello")})
        statuses = [each.header(b"cache-status")[0] for each in answers]
        self.assertEqual(sum(b"collapsed" in each for each in statuses), 4)
        self.assertEqual(len(self.origin.requests), 1)
