"""
Tests for L{txproxy.admin}: the admin API's logic without sockets, then its
HTTP endpoints over real loopback connections.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IListeningPort
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.loopback import RawClient, connect_raw, split_response
from txproxy import config
from txproxy.admin import (
    MAX_BODY,
    AdminAPI,
    AdminSite,
    BadRequest,
    NoCache,
    ServerExists,
    UnknownPool,
    UnknownServer,
    describe_pool,
    describe_server,
    read_json,
    server_from_json,
)
from txproxy.balancing import LeastConnections, RoundRobin
from txproxy.interfaces import IBalancer, ICachePurge, IServerView, PickContext
from txproxy.pool import WEIGHT_SCALE, CheckResult, Lease, Pool, ServerState, ServerStatus

CLIENT = "192.0.2.7"


def build_server(server: config.Server) -> ServerState:
    """
    The runtime state of a configured server, as C{service.build_server}
    makes it for a server without TLS.
    """
    return ServerState(
        server.address,
        weight=server.weight,
        backup=server.backup,
        max_connections=server.max_connections,
    )


def make_pools() -> dict[str, Pool]:
    """
    Two pools: C{api} with a primary, an IPv6 primary and a backup, and C{db}.
    """
    return {
        "api": Pool(
            "api",
            [
                ServerState("10.0.0.1:80"),
                ServerState("[::1]:8080", weight=2),
                ServerState("10.0.0.9:80", backup=True),
            ],
            RoundRobin(),
        ),
        "db": Pool("db", [ServerState("10.0.1.1:5432")], LeastConnections()),
    }


def lease_of(pool: Pool, address: str) -> Lease:
    """
    Lease the server at C{address} of C{pool}.
    """
    others = frozenset(server.address for server in pool.servers) - {address}
    lease = pool.lease(PickContext(exclude=others))
    assert lease is not None and lease.server.address == address
    return lease


@contextmanager
def admin_logs() -> Iterator[list[dict[str, object]]]:
    """
    Capture the change lines the admin API logs: their fields and their text.
    """
    found: list[dict[str, object]] = []
    with capturedLogs() as events:
        yield found
    found.extend(
        {key: event.get(key) for key in ("action", "pool", "server", "client", "status")}
        | {"text": event["log_format"].format(**event)}
        for event in events
        if event.get("log_namespace") == "txproxy.admin.AdminAPI"
    )


@implementer(ICachePurge)
class RecordingCache:
    """
    A cache that records what it was asked to purge and says it removed C{count}.
    """

    def __init__(self, count: int = 3) -> None:
        self.count = count
        self.purged: list[tuple[str, str]] = []

    def purge_url(self, url: str) -> int:
        if url.endswith("/refused"):
            raise ValueError("this cache refuses that URL")
        self.purged.append(("url", url))
        return self.count

    def purge_prefix(self, prefix: str) -> int:
        self.purged.append(("prefix", prefix))
        return self.count


@implementer(IBalancer)
class FirstAvailable:
    """
    A balancer given as an object: picks the first available server.
    """

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        return next((server for server in servers if server.available), None)


class ReadJSONTests(SynchronousTestCase):
    """
    Tests for L{read_json}: request bodies are decoded strictly.
    """

    def test_object_decoded(self) -> None:
        """
        A UTF-8 JSON object is decoded as a dict.
        """
        self.assertEqual(read_json(b'{"address": "h\xc3\xa9:80"}'), {"address": "h\u00e9:80"})

    def test_empty_refused(self) -> None:
        """
        An empty or blank body is refused, saying a JSON object is wanted.
        """
        for body in (b"", b" \r\n"):
            error = self.assertRaises(BadRequest, read_json, body)
            self.assertIn("empty", str(error))

    def test_not_json_refused(self) -> None:
        """
        A body that is not JSON is refused, saying where the decoder stopped.
        """
        error = self.assertRaises(BadRequest, read_json, b'{"address": }')
        self.assertEqual(str(error), "the body is not JSON: Expecting value at line 1 column 13")
        self.assertIsNone(error.field)

    def test_not_utf8_refused(self) -> None:
        """
        A body in another encoding is refused.
        """
        error = self.assertRaises(BadRequest, read_json, '{"a": "\u00e9"}'.encode("latin-1"))
        self.assertEqual(str(error), "the body is not UTF-8")

    def test_repeated_name_refused(self) -> None:
        """
        An object that gives one name twice is refused, naming it: which value
        counts would be a guess.
        """
        error = self.assertRaises(BadRequest, read_json, b'{"weight": 1, "weight": 5}')
        self.assertEqual(error.field, "weight")

    def test_non_finite_numbers_refused(self) -> None:
        """
        C{NaN} and C{Infinity}, which Python's decoder allows, are not JSON.
        """
        for body in (b'{"weight": NaN}', b"[Infinity]", b"-Infinity"):
            error = self.assertRaises(BadRequest, read_json, body)
            self.assertIn("is not a JSON value", str(error))


class ServerFromJSONTests(SynchronousTestCase):
    """
    Tests for L{server_from_json}: a server's JSON is checked as the
    configuration file's servers are.
    """

    def test_every_field(self) -> None:
        """
        Every field is taken over into the L{config.Server}.
        """
        server = server_from_json(
            {"address": "[::1]:81", "weight": 3, "backup": True, "max_connections": 10}
        )
        self.assertEqual(
            (server.address, server.weight, server.backup, server.max_connections),
            ("[::1]:81", 3, True, 10),
        )

    def test_defaults(self) -> None:
        """
        Only the address is required; the rest default as in the configuration.
        """
        self.assertEqual(
            server_from_json({"address": "a.example:80"}), config.Server("a.example:80")
        )
        self.assertEqual(
            server_from_json({"address": "a.example:80", "max_connections": None}),
            config.Server("a.example:80"),
        )

    def test_not_an_object_refused(self) -> None:
        """
        A body that is not a JSON object is refused with an example.
        """
        for document in (["10.0.0.1:80"], "10.0.0.1:80", None, 3):
            error = self.assertRaises(BadRequest, server_from_json, document)
            self.assertIn("must be a JSON object", str(error))

    def test_unknown_field_refused(self) -> None:
        """
        A field a server does not take is refused and named, with the fields
        it does take.
        """
        error = self.assertRaises(
            BadRequest, server_from_json, {"address": "10.0.0.1:80", "tls": {}, "zone": "a"}
        )
        self.assertEqual(error.field, "tls")
        self.assertIn("address, weight, backup, max_connections", str(error))

    def test_address_required(self) -> None:
        """
        A server without an address is refused.
        """
        error = self.assertRaises(BadRequest, server_from_json, {"weight": 2})
        self.assertEqual(error.field, "address")

    def test_bad_values_refused(self) -> None:
        """
        Each value the configuration refuses is refused with its message, the
        field named.
        """
        cases = [
            ({"address": "10.0.0.1"}, "address", "must be 'host:port'"),
            ({"address": "10.0.0.1:0"}, "address", "port must be 1-65535"),
            ({"address": "10.0.0.1:65536"}, "address", "port must be 1-65535"),
            ({"address": "[::1:80"}, "address", "must be 'host:port'"),
            ({"address": 80}, "address", "must be a 'host:port' string"),
            ({"address": "a:80", "weight": 0}, "weight", "must be at least 1, not 0"),
            ({"address": "a:80", "weight": "2"}, "weight", "must be an integer"),
            ({"address": "a:80", "weight": 1.5}, "weight", "must be an integer"),
            ({"address": "a:80", "weight": True}, "weight", "must be an integer"),
            ({"address": "a:80", "backup": "yes"}, "backup", "must be"),
            ({"address": "a:80", "backup": 1}, "backup", "must be"),
            ({"address": "a:80", "max_connections": 0}, "max_connections", "at least 1"),
        ]
        for document, field, message in cases:
            error = self.assertRaises(BadRequest, server_from_json, document)
            self.assertEqual(error.field, field, document)
            self.assertIn(message, error.message, document)
            self.assertEqual(error.document(), {"error": str(error), "field": field})
            self.assertNotIn("test_admin", str(error))


class DescribeTests(SynchronousTestCase):
    """
    Tests for L{describe_server} and L{describe_pool}: the JSON of the state.
    """

    def test_server(self) -> None:
        """
        A server's JSON has its settings, status, counters and last check;
        C{weight} is the configured weight and C{effective_weight} the one
        balancers use now, in the same units.
        """
        server = ServerState("10.0.0.1:80", weight=2, backup=True, max_connections=5)
        server.status = ServerStatus.DOWN
        server.healthy = False
        server.down_reason = "connection refused"
        server.active, server.total, server.fails, server.failures = 1, 40, 2, 7
        server.weight = WEIGHT_SCALE // 5
        server.last_check = CheckResult(1700000000.5, False, "connection refused", 0.25)
        self.assertEqual(
            describe_server(server),
            {
                "address": "10.0.0.1:80",
                "status": "down",
                "weight": 2,
                "effective_weight": 0.2,
                "backup": True,
                "max_connections": 5,
                "active": 1,
                "total": 40,
                "fails": 2,
                "failures": 7,
                "healthy": False,
                "down_reason": "connection refused",
                "last_check": {
                    "time": 1700000000.5,
                    "ok": False,
                    "reason": "connection refused",
                    "duration": 0.25,
                },
            },
        )

    def test_server_never_checked(self) -> None:
        """
        A server with no active check yet has C{null} for its last check.
        """
        described = describe_server(ServerState("10.0.0.1:80"))
        self.assertIsNone(described["last_check"])
        self.assertEqual(
            (described["status"], described["weight"], described["effective_weight"]),
            ("up", 1, 1.0),
        )

    def test_pool(self) -> None:
        """
        A pool's JSON names its balancer as the configuration does, and has its
        queue, slow start and servers in order.
        """
        pool = make_pools()["api"]
        described = describe_pool(pool)
        self.assertEqual(described["name"], "api")
        self.assertEqual(described["balancer"], "round_robin")
        self.assertEqual(described["queue"], {"size": 0, "timeout": 10.0, "waiting": 0})
        self.assertEqual(described["slow_start"], 0.0)
        servers = described["servers"]
        assert isinstance(servers, list)
        self.assertEqual(
            [server["address"] for server in servers], ["10.0.0.1:80", "[::1]:8080", "10.0.0.9:80"]
        )
        self.assertEqual(describe_pool(make_pools()["db"])["balancer"], "least_connections")

    def test_balancer_object(self) -> None:
        """
        A balancer given as an object is named by its class's dotted name.
        """
        pool = Pool("p", [ServerState("10.0.0.1:80")], FirstAvailable())
        self.assertEqual(describe_pool(pool)["balancer"], "tests.test_admin.FirstAvailable")

    def test_json_encodable(self) -> None:
        """
        What the API answers survives a round trip through JSON unchanged.
        """
        described = AdminAPI(make_pools(), build_server).describe_pools()
        self.assertEqual(json.loads(json.dumps(described)), described)


class AdminAPITests(SynchronousTestCase):
    """
    Tests for L{AdminAPI} on runtime pools, without HTTP.
    """

    def setUp(self) -> None:
        self.pools = make_pools()
        self.built: list[config.Server] = []
        self.api = AdminAPI(self.pools, self.new_server)

    def new_server(self, server: config.Server) -> ServerState:
        self.built.append(server)
        return build_server(server)

    def addresses(self, name: str = "api") -> list[str]:
        return [server.address for server in self.pools[name].servers]

    def test_describe_pools_in_order(self) -> None:
        """
        C{describe_pools} lists every pool in the order of the mapping given,
        which is the configuration's.
        """
        pools = self.api.describe_pools()["pools"]
        assert isinstance(pools, list)
        self.assertEqual([pool["name"] for pool in pools], ["api", "db"])

    def test_pools_seen_live(self) -> None:
        """
        The API reads the mapping it was given each time, so that pools a
        reload adds are seen at once.
        """
        self.pools["web"] = Pool("web", [ServerState("10.0.2.1:80")], RoundRobin())
        self.assertEqual(self.api.describe_pool("web")["name"], "web")

    def test_unknown_pool(self) -> None:
        """
        An unknown pool raises L{UnknownPool} with its name, whatever the
        operation.
        """
        operations = [
            lambda: self.api.describe_pool("nope"),
            lambda: self.api.describe_server("nope", "10.0.0.1:80"),
            lambda: self.api.add_server("nope", {"address": "10.0.0.5:80"}, CLIENT),
            lambda: self.api.remove_server("nope", "10.0.0.1:80", CLIENT),
            lambda: self.api.drain_server("nope", "10.0.0.1:80", CLIENT),
            lambda: self.api.enable_server("nope", "10.0.0.1:80", CLIENT),
            lambda: self.api.disable_server("nope", "10.0.0.1:80", CLIENT),
        ]
        for operation in operations:
            error = self.assertRaises(UnknownPool, operation)
            self.assertEqual(error.document(), {"error": "no pool nope", "pool": "nope"})
        self.assertEqual(self.built, [])

    def test_unknown_server(self) -> None:
        """
        An address the pool does not have raises L{UnknownServer} with the
        pool and the address, and changes nothing.
        """
        for operation in (
            self.api.remove_server,
            self.api.drain_server,
            self.api.enable_server,
            self.api.disable_server,
        ):
            error = self.assertRaises(UnknownServer, operation, "db", "10.0.0.1:80", CLIENT)
            self.assertEqual((error.pool, error.server), ("db", "10.0.0.1:80"))
            self.assertEqual(error.status, 404)
        self.assertRaises(UnknownServer, self.api.describe_server, "db", "10.0.0.1:80")
        self.assertEqual(self.pools["db"].servers[0].status, ServerStatus.UP)

    def test_add_server(self) -> None:
        """
        An added server is built from its configuration by the callable given,
        joins the pool last, takes work at once, and the change is logged
        with who asked.
        """
        with admin_logs() as logs:
            added = self.api.add_server(
                "api", {"address": "10.0.0.5:80", "weight": 3, "max_connections": 2}, CLIENT
            )
        self.assertEqual(self.built, [config.Server("10.0.0.5:80", weight=3, max_connections=2)])
        self.assertEqual(self.addresses()[-1], "10.0.0.5:80")
        self.assertEqual(
            (added["address"], added["status"], added["weight"], added["max_connections"]),
            ("10.0.0.5:80", "up", 3, 2),
        )
        lease_of(self.pools["api"], "10.0.0.5:80").release()
        self.assertEqual(
            logs,
            [
                {
                    "action": "add",
                    "pool": "api",
                    "server": "10.0.0.5:80",
                    "client": CLIENT,
                    "status": "up",
                    "text": f"admin: server 10.0.0.5:80 added to pool api by {CLIENT}",
                }
            ],
        )

    def test_add_backup_server(self) -> None:
        """
        A server added as a backup joins the backup tier.
        """
        self.api.add_server("db", {"address": "10.0.1.2:5432", "backup": True}, CLIENT)
        self.assertTrue(self.pools["db"].server("10.0.1.2:5432").backup)

    def test_add_duplicate(self) -> None:
        """
        Adding an address the pool has raises L{ServerExists} (409) and
        leaves the pool as it was.
        """
        with admin_logs() as logs:
            error = self.assertRaises(
                ServerExists, self.api.add_server, "api", {"address": "[::1]:8080"}, CLIENT
            )
        self.assertEqual((error.pool, error.server, error.status), ("api", "[::1]:8080", 409))
        self.assertEqual(self.addresses(), ["10.0.0.1:80", "[::1]:8080", "10.0.0.9:80"])
        self.assertEqual(self.pools["api"].server("[::1]:8080").configured_weight, 2)
        self.assertEqual(logs, [])

    def test_add_invalid(self) -> None:
        """
        An invalid server raises L{BadRequest} before anything is built or added.
        """
        self.assertRaises(
            BadRequest, self.api.add_server, "api", {"address": "10.0.0.5:80", "weight": -1}, CLIENT
        )
        self.assertEqual(self.built, [])
        self.assertEqual(len(self.pools["api"].servers), 3)

    def test_remove_idle(self) -> None:
        """
        Removing an idle server takes it out at once; both the request and
        the removal are logged.
        """
        with admin_logs() as logs:
            removed = self.api.remove_server("api", "10.0.0.1:80", CLIENT)
        self.assertEqual(removed["status"], "draining")
        self.assertEqual(self.addresses(), ["[::1]:8080", "10.0.0.9:80"])
        self.assertEqual([log["action"] for log in logs], ["remove", "removed"])
        self.assertEqual(
            logs[1]["text"],
            f"admin: server 10.0.0.1:80 removed from pool api, drained (asked by {CLIENT})",
        )

    def test_remove_busy(self) -> None:
        """
        Removing a server with work in flight drains it: it stays in the pool,
        takes nothing new, and goes once its last lease is released; asking
        again meanwhile logs nothing more.
        """
        pool = self.pools["api"]
        lease = lease_of(pool, "10.0.0.1:80")
        with admin_logs() as logs:
            removed = self.api.remove_server("api", "10.0.0.1:80", CLIENT)
            again = self.api.remove_server("api", "10.0.0.1:80", "192.0.2.8")
        self.assertEqual((removed["status"], removed["active"]), ("draining", 1))
        self.assertEqual(again["status"], "draining")
        self.assertIn("10.0.0.1:80", self.addresses())
        self.assertEqual([log["action"] for log in logs], ["remove"])
        self.assertEqual(
            logs[0]["text"],
            f"admin: server 10.0.0.1:80 of pool api draining, to be removed, by {CLIENT}",
        )
        with admin_logs() as logs:
            lease.release()
        self.assertNotIn("10.0.0.1:80", self.addresses())
        self.assertEqual([(log["action"], log["client"]) for log in logs], [("removed", CLIENT)])

    def test_drain_disable_enable(self) -> None:
        """
        Drain, disable and enable change the server's status and are logged
        with the status they left.
        """
        pool = self.pools["api"]
        with admin_logs() as logs:
            self.assertEqual(
                self.api.drain_server("api", "10.0.0.1:80", CLIENT)["status"], "draining"
            )
            self.assertEqual(pool.server("10.0.0.1:80").status, ServerStatus.DRAINING)
            self.assertEqual(
                self.api.disable_server("api", "10.0.0.1:80", CLIENT)["status"], "disabled"
            )
            self.assertEqual(pool.server("10.0.0.1:80").status, ServerStatus.DISABLED)
            self.assertEqual(self.api.enable_server("api", "10.0.0.1:80", CLIENT)["status"], "up")
            self.assertEqual(pool.server("10.0.0.1:80").status, ServerStatus.UP)
        self.assertEqual(
            [(log["action"], log["status"]) for log in logs],
            [("drain", "draining"), ("disable", "disabled"), ("enable", "up")],
        )
        self.assertEqual(
            logs[1]["text"],
            f"admin: server 10.0.0.1:80 of pool api disabled by {CLIENT}, now disabled",
        )

    def test_enable_unhealthy(self) -> None:
        """
        Enabling a server its health checks find down leaves it down until
        they pass, and says so.
        """
        pool = self.pools["api"]
        self.api.disable_server("api", "10.0.0.1:80", CLIENT)
        pool.mark_down("10.0.0.1:80", "connection refused")
        self.assertEqual(self.api.enable_server("api", "10.0.0.1:80", CLIENT)["status"], "down")

    def test_enable_while_removing(self) -> None:
        """
        A server being removed stays draining when enabled, and is still removed.
        """
        lease = lease_of(self.pools["api"], "10.0.0.1:80")
        self.api.remove_server("api", "10.0.0.1:80", CLIENT)
        self.assertEqual(self.api.enable_server("api", "10.0.0.1:80", CLIENT)["status"], "draining")
        lease.release()
        self.assertNotIn("10.0.0.1:80", self.addresses())


class PurgeCacheTests(SynchronousTestCase):
    """
    Tests for L{AdminAPI.purge_cache}: the seam to the HTTP cache.
    """

    def setUp(self) -> None:
        self.cache = RecordingCache()
        self.api = AdminAPI(make_pools(), build_server, cache=self.cache)

    def test_recording_cache_provides(self) -> None:
        """
        The test's cache provides L{ICachePurge}, as the real one must.
        """
        self.assertTrue(verifyObject(ICachePurge, self.cache))

    def test_no_cache(self) -> None:
        """
        Without a cache, purging raises L{NoCache} (404).
        """
        api = AdminAPI(make_pools(), build_server)
        error = self.assertRaises(NoCache, api.purge_cache, {"url": ["http://a/"]}, CLIENT)
        self.assertEqual((error.status, str(error)), (404, "no cache is configured"))

    def test_url(self) -> None:
        """
        C{url} purges one absolute URL and answers how many responses went;
        the purge is logged.
        """
        with capturedLogs() as events:
            answer = self.api.purge_cache({"url": ["https://example.com/a?b=1"]}, CLIENT)
        self.assertEqual(answer, {"removed": 3, "url": "https://example.com/a?b=1"})
        self.assertEqual(self.cache.purged, [("url", "https://example.com/a?b=1")])
        [event] = [event for event in events if event.get("action") == "purge"]
        self.assertEqual((event["client"], event["removed"]), (CLIENT, 3))

    def test_prefix(self) -> None:
        """
        C{prefix} purges every URL that starts with it.
        """
        answer = self.api.purge_cache({"prefix": ["http://example.com/static/"]}, CLIENT)
        self.assertEqual(answer, {"removed": 3, "prefix": "http://example.com/static/"})
        self.assertEqual(self.cache.purged, [("prefix", "http://example.com/static/")])

    def test_bad_query(self) -> None:
        """
        Anything but exactly one absolute C{url} or C{prefix} is refused, and
        nothing is purged.
        """
        queries: list[dict[str, list[str]]] = [
            {},
            {"url": ["http://a/"], "prefix": ["http://a/"]},
            {"url": ["http://a/", "http://b/"]},
            {"url": ["/a"]},
            {"url": ["http://"]},
            {"url": ["ftp://a/"]},
            {"prefix": ["/static/"]},
            {"path": ["/a"]},
        ]
        for query in queries:
            self.assertRaises(BadRequest, self.api.purge_cache, query, CLIENT)
        self.assertEqual(self.cache.purged, [])

    def test_cache_refuses(self) -> None:
        """
        A value the cache refuses with C{ValueError} is a bad request.
        """
        error = self.assertRaises(
            BadRequest, self.api.purge_cache, {"url": ["http://a/refused"]}, CLIENT
        )
        self.assertEqual(
            error.document(), {"error": "url: this cache refuses that URL", "field": "url"}
        )


class AdminHTTPTests(TestCase):
    """
    The admin API over real loopback connections, served by L{AdminSite}.
    """

    def start(self, token: str | None = None, cache: ICachePurge | None = None) -> AdminSite:
        """
        Serve the API over L{make_pools} on a free loopback port until the test ends.
        """
        self.pools = make_pools()
        self.api = AdminAPI(self.pools, build_server, cache=cache)
        site = AdminSite(self.api, reactor, token=token)
        self.port: IListeningPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(site.close_connections)
        self.addCleanup(self.port.stopListening)
        return site

    @inlineCallbacks
    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Deferred[tuple[int, dict[bytes, list[bytes]], object]]:
        """
        Send one request; return the status, headers and decoded JSON body.
        """
        client: RawClient = yield connect_raw(self.port.getHost().port)
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        client.transport.write("\r\n".join(lines).encode() + b"\r\n\r\n" + (body or b""))
        data = yield client.closed
        status, response_headers, rest = split_response(data)
        return status, response_headers, json.loads(rest) if rest else None

    @inlineCallbacks
    def test_get_pools(self) -> Deferred[None]:
        """
        C{GET /pools} answers every pool and server as JSON that no cache
        may keep.
        """
        self.start()
        lease_of(self.pools["api"], "10.0.0.1:80")
        status, headers, document = yield self.call("GET", "/pools")
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        self.assertEqual(headers[b"cache-control"], [b"no-store"])
        self.assertEqual(headers[b"server"], [b"txproxy"])
        self.assertEqual(document, self.api.describe_pools())
        assert isinstance(document, dict)
        self.assertEqual(document["pools"][0]["servers"][0]["active"], 1)

    @inlineCallbacks
    def test_get_pool_and_server(self) -> Deferred[None]:
        """
        One pool and one server have their own URLs; an IPv6 address works
        written plainly or percent-encoded, and one trailing slash is forgiven.
        """
        self.start()
        status, _, document = yield self.call("GET", "/pools/db/")
        self.assertEqual((status, document), (200, describe_pool(self.pools["db"])))
        expected = describe_server(self.pools["api"].server("[::1]:8080"))
        for path in ("/pools/api/servers/[::1]:8080", "/pools/api/servers/%5B%3A%3A1%5D%3A8080"):
            status, _, document = yield self.call("GET", path)
            self.assertEqual((status, document), (200, expected))

    @inlineCallbacks
    def test_head(self) -> Deferred[None]:
        """
        C{HEAD} answers as C{GET} would, without the body.
        """
        self.start()
        _, _, expected = yield self.call("GET", "/pools")
        client: RawClient = yield connect_raw(self.port.getHost().port)
        client.transport.write(b"HEAD /pools HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = yield client.closed
        status, headers, rest = split_response(data)
        self.assertEqual((status, rest), (200, b""))
        length = len(json.dumps(expected, indent=2)) + 1
        self.assertEqual(headers[b"content-length"], [str(length).encode()])

    @inlineCallbacks
    def test_add_server(self) -> Deferred[None]:
        """
        C{POST /pools/<pool>/servers} adds the server to the running pool and
        answers 201 with its JSON and its URL; the change is logged with the
        client's address.
        """
        self.start()
        body = json.dumps({"address": "[::1]:9000", "weight": 4, "backup": False}).encode()
        with admin_logs() as logs:
            status, headers, document = yield self.call(
                "POST", "/pools/api/servers", body, [("Content-Type", "application/json")]
            )
        self.assertEqual(status, 201)
        self.assertEqual(headers[b"location"], [b"/pools/api/servers/[::1]:9000"])
        added = self.pools["api"].server("[::1]:9000")
        self.assertEqual(document, describe_server(added))
        self.assertEqual((added.configured_weight, added.status), (4, ServerStatus.UP))
        self.assertEqual(
            [log["text"] for log in logs],
            ["admin: server [::1]:9000 added to pool api by 127.0.0.1"],
        )

    @inlineCallbacks
    def test_add_server_refused(self) -> Deferred[None]:
        """
        A body that is not JSON, not an object, with an unknown field or a bad
        address gets 400 with a JSON error naming the field; the pool is
        unchanged.
        """
        self.start()
        cases = [
            (b"address=10.0.0.5:80", None),
            (b"", None),
            (b'["10.0.0.5:80"]', None),
            (b'{"address": "10.0.0.5:80", "tls": true}', "tls"),
            (b'{"address": "10.0.0.5"}', "address"),
            (b'{"address": "10.0.0.5:70000"}', "address"),
            (b'{"address": "10.0.0.5:80", "weight": 0}', "weight"),
        ]
        for body, field in cases:
            status, headers, document = yield self.call("POST", "/pools/api/servers", body)
            self.assertEqual(status, 400, body)
            self.assertEqual(headers[b"content-type"], [b"application/json"])
            assert isinstance(document, dict)
            self.assertIsInstance(document["error"], str)
            self.assertEqual(document.get("field"), field, body)
        self.assertEqual(len(self.pools["api"].servers), 3)

    @inlineCallbacks
    def test_add_duplicate(self) -> Deferred[None]:
        """
        Adding an address the pool has is a conflict: 409.
        """
        self.start()
        status, _, document = yield self.call(
            "POST", "/pools/api/servers", b'{"address": "10.0.0.1:80"}'
        )
        self.assertEqual(status, 409)
        self.assertEqual(
            document,
            {
                "error": "pool api already has a server 10.0.0.1:80",
                "pool": "api",
                "server": "10.0.0.1:80",
            },
        )

    @inlineCallbacks
    def test_internal_error(self) -> Deferred[None]:
        """
        An unexpected exception is logged whole and answered with 500 and a
        JSON error that does not show it.
        """
        self.start()

        def broken(server: config.Server) -> ServerState:
            raise RuntimeError("secret detail")

        self.api._new_server = broken
        status, _, document = yield self.call(
            "POST", "/pools/api/servers", b'{"address": "10.0.0.5:80"}'
        )
        self.assertEqual((status, document), (500, {"error": "internal error"}))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(self.pools["api"].servers), 3)

    @inlineCallbacks
    def test_body_too_large(self) -> Deferred[None]:
        """
        A body over L{MAX_BODY} bytes is refused with 413.
        """
        self.start()
        status, _, document = yield self.call("POST", "/pools/api/servers", b" " * (MAX_BODY + 1))
        self.assertEqual(status, 413)
        self.assertEqual(
            document, {"error": f"the body is over {MAX_BODY} bytes", "limit": MAX_BODY}
        )

    @inlineCallbacks
    def test_not_found(self) -> Deferred[None]:
        """
        An unknown pool, server or path gets 404 with a JSON error saying which.
        """
        self.start()
        status, _, document = yield self.call("GET", "/pools/nope")
        self.assertEqual((status, document), (404, {"error": "no pool nope", "pool": "nope"}))
        status, _, document = yield self.call("DELETE", "/pools/api/servers/10.9.9.9:80")
        self.assertEqual(status, 404)
        self.assertEqual(
            document,
            {"error": "pool api has no server 10.9.9.9:80", "pool": "api", "server": "10.9.9.9:80"},
        )
        status, _, document = yield self.call("POST", "/pools/nope/servers", b"{}")
        self.assertEqual((status, document), (404, {"error": "no pool nope", "pool": "nope"}))
        for path in ("/", "/pool", "/pools/api/servers/10.0.0.1:80/restart", "/pools//"):
            status, _, document = yield self.call("GET", path)
            self.assertEqual(status, 404, path)
            self.assertEqual(document, {"error": f"no endpoint {path}", "path": path})

    @inlineCallbacks
    def test_wrong_method(self) -> Deferred[None]:
        """
        A method an endpoint does not take gets 405 with C{Allow}.
        """
        self.start()
        status, headers, document = yield self.call("DELETE", "/pools")
        self.assertEqual(status, 405)
        self.assertEqual(headers[b"allow"], [b"GET, HEAD"])
        self.assertEqual(
            document,
            {
                "error": "DELETE is not allowed here; use GET, HEAD",
                "method": "DELETE",
                "allowed": ["GET", "HEAD"],
            },
        )
        status, headers, _ = yield self.call("GET", "/pools/api/servers/10.0.0.1:80/drain")
        self.assertEqual((status, headers[b"allow"]), (405, [b"POST"]))
        status, headers, _ = yield self.call("PUT", "/pools/api/servers/10.0.0.1:80")
        self.assertEqual((status, headers[b"allow"]), (405, [b"GET, DELETE, HEAD"]))

    @inlineCallbacks
    def test_drain_disable_enable(self) -> Deferred[None]:
        """
        The drain, disable and enable endpoints change the running server and
        answer 200 with its JSON.
        """
        self.start()
        server = self.pools["api"].server("[::1]:8080")
        for action, status_after in [
            ("drain", ServerStatus.DRAINING),
            ("disable", ServerStatus.DISABLED),
            ("enable", ServerStatus.UP),
        ]:
            status, _, document = yield self.call(
                "POST", f"/pools/api/servers/%5B%3A%3A1%5D%3A8080/{action}"
            )
            self.assertEqual(status, 200)
            self.assertEqual(server.status, status_after)
            self.assertEqual(document, describe_server(server))

    @inlineCallbacks
    def test_delete_drains_then_removes(self) -> Deferred[None]:
        """
        C{DELETE} answers 202 at once with the server draining; the server
        stays while its lease is held and takes nothing new, then goes once
        the lease is released, and that is logged.
        """
        self.start()
        pool = self.pools["api"]
        lease = lease_of(pool, "10.0.0.1:80")
        with admin_logs() as logs:
            status, _, document = yield self.call("DELETE", "/pools/api/servers/10.0.0.1:80")
        self.assertEqual(status, 202)
        assert isinstance(document, dict)
        self.assertEqual((document["status"], document["active"]), ("draining", 1))
        self.assertIn(lease.server, pool.servers)
        new = pool.lease(PickContext(exclude=frozenset({"[::1]:8080"})))
        self.assertIsNotNone(new)
        assert new is not None
        self.assertNotEqual(new.server.address, "10.0.0.1:80")
        new.release()
        self.assertEqual([log["action"] for log in logs], ["remove"])
        with admin_logs() as logs:
            lease.release()
        self.assertNotIn(lease.server, pool.servers)
        self.assertEqual(
            [log["text"] for log in logs],
            ["admin: server 10.0.0.1:80 removed from pool api, drained (asked by 127.0.0.1)"],
        )
        status, _, _ = yield self.call("GET", "/pools/api/servers/10.0.0.1:80")
        self.assertEqual(status, 404)

    @inlineCallbacks
    def test_token_required(self) -> Deferred[None]:
        """
        With a token, a request without it or with a wrong one gets 401 and a
        Bearer challenge, before any routing; the right one is let in.
        """
        self.start(token="s3cret")
        status, headers, document = yield self.call("GET", "/pools")
        self.assertEqual(status, 401)
        self.assertEqual(headers[b"www-authenticate"], [b'Bearer realm="txproxy"'])
        self.assertEqual(
            document, {"error": "a token is required: send Authorization: Bearer <token>"}
        )
        for value in ("Bearer wrong", "Basic s3cret", "s3cret", "Bearer s3cret2", "Bearer "):
            status, headers, document = yield self.call(
                "GET", "/nothing", headers=[("Authorization", value)]
            )
            self.assertEqual(status, 401, value)
            self.assertEqual(
                headers[b"www-authenticate"], [b'Bearer realm="txproxy", error="invalid_token"']
            )
            self.assertEqual(document, {"error": "the token is wrong"})
        status, _, _ = yield self.call(
            "POST", "/pools/api/servers/10.0.0.1:80/drain", headers=[("Authorization", "Bearer x")]
        )
        self.assertEqual(self.pools["api"].server("10.0.0.1:80").status, ServerStatus.UP)
        for value in ("Bearer s3cret", "bearer s3cret"):
            status, _, _ = yield self.call("GET", "/pools", headers=[("Authorization", value)])
            self.assertEqual(status, 200, value)

    @inlineCallbacks
    def test_token_changed_in_place(self) -> Deferred[None]:
        """
        Setting the site's token takes effect from the next request, as a
        reload that changes it needs.
        """
        site = self.start()
        site.token = "new"
        status, _, _ = yield self.call("GET", "/pools")
        self.assertEqual(status, 401)
        status, _, _ = yield self.call("GET", "/pools", headers=[("Authorization", "Bearer new")])
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_web_pages_refused(self) -> Deferred[None]:
        """
        A request with an C{Origin} header, as browsers send, gets 403 and
        changes nothing: a web page cannot drive the API.
        """
        self.start()
        status, _, document = yield self.call(
            "POST",
            "/pools/api/servers/10.0.0.1:80/disable",
            headers=[("Origin", "http://evil.example")],
        )
        self.assertEqual(status, 403)
        assert isinstance(document, dict)
        self.assertEqual(document["origin"], "http://evil.example")
        self.assertEqual(self.pools["api"].server("10.0.0.1:80").status, ServerStatus.UP)

    @inlineCallbacks
    def test_purge_cache(self) -> Deferred[None]:
        """
        C{DELETE /cache?url=} purges through the cache given and answers the
        count; without a cache it is 404.
        """
        cache = RecordingCache(count=2)
        self.start(cache=cache)
        status, _, document = yield self.call(
            "DELETE", "/cache?url=http%3A%2F%2Fexample.com%2Fa%3Fb%3D1"
        )
        self.assertEqual(
            (status, document), (200, {"removed": 2, "url": "http://example.com/a?b=1"})
        )
        status, _, document = yield self.call("DELETE", "/cache?prefix=http://example.com/s/")
        self.assertEqual(
            (status, document), (200, {"removed": 2, "prefix": "http://example.com/s/"})
        )
        status, _, _ = yield self.call("DELETE", "/cache?url=/relative")
        self.assertEqual(status, 400)
        self.assertEqual(
            cache.purged, [("url", "http://example.com/a?b=1"), ("prefix", "http://example.com/s/")]
        )
        yield self.port.stopListening()
        self.start()
        status, _, document = yield self.call("DELETE", "/cache?url=http://example.com/")
        self.assertEqual((status, document), (404, {"error": "no cache is configured"}))

    @inlineCallbacks
    def test_close_connections(self) -> Deferred[None]:
        """
        L{AdminSite.close_connections} closes kept-alive connections and fires
        once they are gone.
        """
        site = self.start()
        client: RawClient = yield connect_raw(self.port.getHost().port)
        client.transport.write(b"GET /pools HTTP/1.1\r\nHost: a\r\n\r\n")
        yield client.wait_for(b"}\n")
        self.assertEqual(len(site.channels), 1)
        yield site.close_connections()
        self.assertEqual(site.channels, set())
        yield client.closed

    @inlineCallbacks
    def test_listener_service(self) -> Deferred[None]:
        """
        C{service.ListenerService} runs an L{AdminSite} as it runs a listener:
        listening on start, closing connections on stop.
        """
        from txproxy.service import ListenerService

        pools = make_pools()
        site = AdminSite(AdminAPI(pools, build_server), reactor)
        service = ListenerService(reactor, "tcp:0:interface=127.0.0.1", site, "admin API")
        service.startService()
        assert service.port is not None
        self.port = service.port
        client: RawClient = yield connect_raw(self.port.getHost().port)
        client.transport.write(b"GET /pools/db HTTP/1.1\r\nHost: a\r\n\r\n")
        yield client.wait_for(b"}\n")
        yield service.stopService()
        data = yield client.closed
        self.assertEqual(split_response(data)[0], 200)
        self.assertEqual(site.channels, set())
