"""
Tests for L{txproxy.http.caching}: routes with a cache, driven by string
transports and a memory reactor.
"""

from __future__ import annotations

from attrs import evolve
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.test_http_channel import Client, MemoryListener
from tests.test_http_h2 import RecordingLog
from txproxy import config
from txproxy.http.cache import CachedResponse, CacheStore
from txproxy.http.cacheregistry import CacheRegistry
from txproxy.http.caching import RouteCache, same_cache
from txproxy.http.events import RequestHead, ResponseHead
from txproxy.interfaces import ICachePurge

SERVER = "10.0.0.1:8080"

GET = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
HEAD = b"HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 5\r\n\r\nhello"


class CacheListener(MemoryListener):
    """
    A L{MemoryListener} whose one route caches, with an access log that keeps
    its records, and a clock at a plausible date.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        cache: config.Cache | None = None,
        compression: config.Compression | None = None,
        limits: config.Limits | None = None,
    ) -> None:
        self.access_log = RecordingLog()
        super().__init__(
            test,
            SERVER,
            retries=0,
            limits=limits,
            cache=cache or config.Cache(),
            compression=compression,
            access_log=self.access_log,
            now=1_800_000_000,
        )

    @property
    def cache(self) -> RouteCache:
        [cache] = self.factory._route_caches.values()
        return cache

    def fetch(self, request: bytes = GET, answer: bytes = OK) -> Client:
        """
        Send C{request} from a new client and let a new upstream connection
        answer it with C{answer}.
        """
        client = self.connect()
        client.send(request)
        upstream = self.accept()
        upstream.respond(answer)
        return client

    def assert_clean(self) -> None:
        """
        Close every client and idle upstream connection; no timer and no lease may be left.
        """
        for client in self.clients:
            client.transport.loseConnection()
            client.close()
        self.idle.close()
        for upstream in self.upstreams:
            upstream.close()
        self._test.assertEqual(self.reactor.getDelayedCalls(), [])
        for server in self.pool.servers:
            self._test.assertEqual(server.active, 0)


def cache_status(data: bytes) -> bytes:
    """
    The C{Cache-Status} of the last response in C{data}.
    """
    return data.rpartition(b"Cache-Status: ")[2].partition(b"\r\n")[0]


class RouteCacheTests(SynchronousTestCase):
    """
    Tests for L{RouteCache} and L{CachedExchange} through a client connection.
    """

    def test_hit_logged_as_cache(self) -> None:
        """
        A hit is answered without an upstream connection, and the access log
        names C{cache} as its upstream and the route's pool.
        """
        listener = CacheListener(self)
        listener.fetch()
        client = listener.connect()
        client.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        self.assertTrue(client.received().endswith(b"\r\n\r\nhello"))
        self.assertEqual(cache_status(client.received()), b"txproxy; hit; ttl=60")
        self.assertEqual(
            [(record.upstream, record.pool) for record in listener.access_log.records],
            [(SERVER, "web"), ("cache", "web")],
        )
        listener.assert_clean()

    def test_hit_keeps_connection(self) -> None:
        """
        A client connection answered from the cache takes its next request.
        """
        listener = CacheListener(self)
        listener.fetch()
        client = listener.connect()
        client.send(GET + GET)
        self.assertEqual(client.received().count(b"HTTP/1.1 200 OK"), 2)
        self.assertFalse(client.transport.disconnecting)
        listener.assert_clean()

    def test_head_miss_forwarded_as_get(self) -> None:
        """
        A C{HEAD} that misses is sent as a C{GET}, whose response is stored;
        the client gets the head alone, and its next C{GET} is a hit.
        """
        listener = CacheListener(self)
        client = listener.connect()
        client.send(HEAD)
        upstream = listener.accept()
        self.assertTrue(upstream.sent().startswith(b"GET /a HTTP/1.1\r\n"))
        upstream.respond(OK)
        self.assertTrue(client.received().endswith(b"stored\r\n\r\n"), client.received())
        self.assertIn(b"Content-Length: 5\r\n", client.received())
        client.send(GET)
        self.assertTrue(client.received().endswith(b"\r\n\r\nhello"))
        self.assertEqual(cache_status(client.received()), b"txproxy; hit; ttl=60")
        listener.assert_clean()

    def test_head_not_stored_forwarded_as_head(self) -> None:
        """
        A C{HEAD} whose response could not be stored (C{no-store}) goes as it is.
        """
        listener = CacheListener(self)
        client = listener.connect()
        client.send(b"HEAD /a HTTP/1.1\r\nHost: example.com\r\nCache-Control: no-store\r\n\r\n")
        upstream = listener.accept()
        self.assertTrue(upstream.sent().startswith(b"HEAD /a HTTP/1.1\r\n"))
        upstream.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        self.assertIn(b"fwd-status=200", client.received())
        listener.assert_clean()

    def test_collapsed_wait_times_out(self) -> None:
        """
        A request waiting for another's fetch goes to a server itself after
        C{collapse_timeout}; it says so in C{Cache-Status}.
        """
        listener = CacheListener(self, config.Cache(collapse_timeout=2.0))
        first = listener.connect()
        first.send(GET)
        leader = listener.accept()
        second = listener.connect()
        second.send(GET)
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        listener.reactor.advance(1.9)
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        listener.reactor.advance(0.1)
        self.assertEqual(len(listener.reactor.tcpClients), 2)
        follower = listener.accept()
        follower.respond(OK)
        self.assertEqual(
            cache_status(second.received()),
            b"txproxy; fwd=uri-miss; fwd-status=200; stored; collapsed=?0",
        )
        leader.respond(OK)
        self.assertIn(b"fwd=uri-miss; fwd-status=200; stored", first.received())
        listener.assert_clean()

    def test_collapsed_client_leaves(self) -> None:
        """
        A waiting client that leaves stops waiting: no timer, and the
        leader's end wakes nobody.
        """
        listener = CacheListener(self)
        first = listener.connect()
        first.send(GET)
        leader = listener.accept()
        second = listener.connect()
        second.send(GET)
        second.close()
        self.assertEqual(listener.cache.pending._waiting["http://example.com/a"], [])
        leader.respond(OK)
        self.assertEqual(len(listener.reactor.tcpClients), 1)
        listener.assert_clean()

    def test_collapsed_waiters_go_when_not_stored(self) -> None:
        """
        When the response fetched cannot be stored, those waiting go to a
        server at once, each for itself, as soon as its head is read.
        """
        listener = CacheListener(self)
        first = listener.connect()
        first.send(GET)
        leader = listener.accept()
        others = [listener.connect() for _ in range(3)]
        for client in others:
            client.send(GET)
        leader.respond(b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(len(listener.reactor.tcpClients), 4)
        for _ in others:
            listener.accept(len(listener.upstreams)).respond(OK)
        leader.respond(b"hello")
        for client in [first, *others]:
            self.assertTrue(client.received().endswith(b"hello"))
        listener.assert_clean()

    def test_leader_fails_waiters_go(self) -> None:
        """
        When the fetch waited for fails, those waiting go to a server themselves.
        """
        listener = CacheListener(self)
        first = listener.connect()
        first.send(GET)
        leader = listener.accept()
        second = listener.connect()
        second.send(GET)
        leader.close()
        self.assertTrue(first.received().startswith(b"HTTP/1.1 502 "))
        self.assertIn(b"Cache-Status: txproxy; fwd=uri-miss\r\n", first.received())
        listener.accept().respond(OK)
        self.assertTrue(second.received().endswith(b"hello"))
        listener.assert_clean()

    def test_stale_if_error_on_server_error(self) -> None:
        """
        A 503 from the server, where C{stale-if-error} covers the stored
        response, is replaced by that response; the server's connection,
        whose body is not read, is closed.
        """
        listener = CacheListener(self, config.Cache(stale_if_error=60))
        listener.fetch(
            answer=b"HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nContent-Length: 5\r\n\r\nhello"
        )
        listener.reactor.advance(5)
        client = listener.connect()
        client.send(GET)
        upstream_client = listener.accept()
        upstream_client.respond(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 10\r\n\r\nbu")
        self.assertTrue(client.received().endswith(b"\r\n\r\nhello"))
        self.assertIn(b"detail=stale-if-error", cache_status(client.received()))
        self.assertTrue(upstream_client.transport.disconnecting)
        listener.assert_clean()

    def test_refetch_after_mismatched_304(self) -> None:
        """
        A 304 whose validator selects another response than the one stored
        makes txproxy ask again, without preconditions, and the client gets
        the new response.
        """
        listener = CacheListener(self)
        listener.fetch(
            answer=b'HTTP/1.1 200 OK\r\nCache-Control: max-age=0\r\nETag: "1"\r\n'
            b"Content-Length: 5\r\n\r\nhello"
        )
        client = listener.connect()
        client.send(GET)
        upstream = listener.upstreams[0]
        self.assertIn(b'If-None-Match: "1"\r\n', upstream.sent().rpartition(b"GET /a")[2])
        upstream.respond(b'HTTP/1.1 304 Not Modified\r\nETag: "2"\r\n\r\n')
        again = upstream.sent().rpartition(b"GET /a")[2]
        self.assertNotIn(b"If-None-Match", again)
        upstream.respond(
            b'HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: "2"\r\n'
            b"Content-Length: 5\r\n\r\nworld"
        )
        self.assertTrue(client.received().endswith(b"world"))
        self.assertEqual(
            cache_status(client.received()), b"txproxy; fwd=miss; fwd-status=200; stored"
        )
        listener.assert_clean()

    def test_background_revalidation_times_out(self) -> None:
        """
        A background revalidation whose server is silent is given up after
        the response timeout, leaving no timer; the stale response stays.
        """
        listener = CacheListener(
            self,
            config.Cache(stale_while_revalidate=60),
            limits=config.Limits(upstream_response_timeout=10.0),
        )
        listener.fetch(
            answer=b"HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nContent-Length: 5\r\n\r\nhello"
        )
        listener.reactor.advance(5)
        client = listener.connect()
        client.send(GET)
        self.assertTrue(client.received().endswith(b"hello"))
        self.assertIn(b"detail=stale-while-revalidate", client.received())
        self.assertTrue(listener.cache.pending.filling("http://example.com/a"))
        upstream = listener.accept()
        self.assertTrue(upstream.sent().startswith(b"GET /a HTTP/1.1\r\n"))
        listener.reactor.advance(10)
        self.assertTrue(upstream.transport.disconnecting)
        self.assertFalse(listener.cache.pending.filling("http://example.com/a"))
        self.assertEqual(len(listener.cache.store), 1)
        listener.assert_clean()

    def test_background_revalidation_stores(self) -> None:
        """
        A background revalidation's 304 freshens the stored response.
        """
        listener = CacheListener(self, config.Cache(stale_while_revalidate=60))
        listener.fetch(
            answer=b'HTTP/1.1 200 OK\r\nCache-Control: max-age=1\r\nETag: "1"\r\n'
            b"Content-Length: 5\r\n\r\nhello"
        )
        listener.reactor.advance(5)
        client = listener.connect()
        client.send(HEAD)
        self.assertIn(b"detail=stale-while-revalidate\r\n", client.received())
        self.assertTrue(client.received().endswith(b"\r\n\r\n"))
        upstream = listener.accept()
        sent = upstream.sent()
        self.assertTrue(sent.startswith(b"GET /a HTTP/1.1\r\n"))
        self.assertIn(b'If-None-Match: "1"', sent)
        upstream.respond(b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n')
        self.assertFalse(listener.cache.pending.filling("http://example.com/a"))
        client.send(GET)
        self.assertTrue(cache_status(client.received()).startswith(b"txproxy; hit; ttl="))
        listener.assert_clean()

    def test_local_responses_have_cache_status(self) -> None:
        """
        txproxy's own answers on a route with a cache carry C{Cache-Status}.
        """
        listener = CacheListener(self, limits=config.Limits(max_body=4))
        client = listener.connect()
        client.send(
            b"POST /a HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"a\r\n0123456789\r\n0\r\n\r\n"
        )
        self.assertTrue(client.received().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(cache_status(client.received()), b"txproxy; fwd=method")
        listener.assert_clean()

    def test_too_large_by_length_has_cache_status(self) -> None:
        """
        A body whose C{Content-Length} is over C{max_body} gets 413, unread,
        with C{Cache-Status}.
        """
        listener = CacheListener(self, limits=config.Limits(max_body=4))
        client = listener.connect()
        client.send(b"POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n")
        self.assertTrue(client.received().startswith(b"HTTP/1.1 413 "))
        self.assertEqual(cache_status(client.received()), b"txproxy; fwd=method")
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(listener.reactor.tcpClients, [])
        listener.assert_clean()

    def test_upgrade_bypasses(self) -> None:
        """
        A request to switch protocols is neither answered from the store nor
        made to wait for another's fetch.
        """
        listener = CacheListener(self)
        listener.fetch()
        client = listener.connect()
        client.send(
            b"GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        [upstream] = listener.upstreams
        self.assertIn(b"Upgrade: websocket", upstream.sent())
        upstream.respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(
            cache_status(client.received()),
            b"txproxy; fwd=bypass; fwd-status=404; detail=upgrade",
        )
        listener.assert_clean()

    def test_accept_encoding_negotiated(self) -> None:
        """
        On a route that compresses too, the server gets the coding txproxy
        negotiated as the request's only C{Accept-Encoding}, or C{identity}.
        """
        listener = CacheListener(self, compression=config.Compression(algorithms=("gzip",)))
        cache = listener.cache
        head = RequestHead(
            b"GET",
            b"/",
            b"1.1",
            ((b"Accept-Encoding", b"br"), (b"X", b"1"), (b"accept-encoding", b"gzip;q=0.5")),
        )
        self.assertEqual(
            cache.negotiated(head).headers, ((b"X", b"1"), (b"Accept-Encoding", b"gzip"))
        )
        head = RequestHead(b"GET", b"/", b"1.1", ())
        self.assertEqual(cache.negotiated(head).headers, ((b"Accept-Encoding", b"identity"),))


class ReloadTests(SynchronousTestCase):
    """
    Route caches across L{HTTPFactory.configure}.
    """

    def test_same_cache(self) -> None:
        """
        A route keeps its store when only its pool's servers change, not
        when its cache settings or matching do.
        """
        pool = config.Pool("web", servers=[config.Server(SERVER)])
        other_servers = config.Pool("web", servers=[config.Server("10.0.0.2:80")])
        route = config.Route(pool, path="/s/", cache=config.Cache())
        self.assertTrue(
            same_cache(route, config.Route(other_servers, path="/s/", cache=config.Cache()))
        )
        self.assertFalse(
            same_cache(route, config.Route(pool, path="/s/", cache=config.Cache(max_size=10**8)))
        )
        self.assertFalse(same_cache(route, config.Route(pool, path="/t/", cache=config.Cache())))
        self.assertFalse(same_cache(route, config.Route(pool, path="/s/")))

    def test_store_kept_on_reload(self) -> None:
        """
        A listener reconfigured with the same cached route keeps what it
        stored; the registry purges the kept store, and forgets those gone.
        """
        listener = CacheListener(self)
        listener.fetch()
        store = listener.cache.store
        registry = listener.factory.caches
        listener.factory.configure(
            config.HTTPListener("tcp:0", routes=[evolve_route(listener.route)])
        )
        self.assertIs(listener.cache.store, store)
        self.assertEqual(registry.stores, (store,))
        listener.factory.configure(
            config.HTTPListener(
                "tcp:0", routes=[evolve_route(listener.route, cache=config.Cache(max_size=10**8))]
            )
        )
        self.assertIsNot(listener.cache.store, store)
        self.assertEqual(registry.stores, (listener.cache.store,))
        self.assertEqual(registry.purge_url("http://example.com/a"), 0)
        listener.factory.configure(
            config.HTTPListener("tcp:0", routes=[config.Route(listener.settings)])
        )
        self.assertRaises(LookupError, registry.purge_url, "http://example.com/a")
        listener.assert_clean()


def evolve_route(route: config.Route, **changes: object) -> config.Route:
    """
    A copy of C{route}, as a reload of the same file makes, with C{changes}.
    """
    return evolve(route, **changes)  # type: ignore[misc]


class CacheRegistryTests(SynchronousTestCase):
    """
    Tests for L{CacheRegistry}.
    """

    def test_purges_every_store(self) -> None:
        """
        Purges go to every store registered, and count the total.
        """
        registry = CacheRegistry()
        verifyObject(ICachePurge, registry)
        stores = [CacheStore(10_000, 1_000), CacheStore(10_000, 1_000)]
        head = RequestHead(b"GET", b"/a", b"1.1", ())
        response = ResponseHead(200, b"OK", b"1.1", ((b"Cache-Control", b"max-age=60"),))
        for store in stores:
            store.put(
                "k",
                CachedResponse.from_response("http://example.com/a", head, response, 0, 0),
            )
        registry.register("one", stores[:1])
        registry.register("two", stores[1:])
        self.assertEqual(registry.purge_prefix("http://example.com/"), 2)
        registry.forget("one")
        registry.register("two", [])
        self.assertRaises(LookupError, registry.purge_prefix, "http://example.com/")
