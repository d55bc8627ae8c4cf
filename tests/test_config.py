# -*- test-case-name: tests.test_config -*-
"""
Tests for L{txproxy.config}: the configuration classes, their checks, and L{load}.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from ipaddress import ip_network

from attrs import validators
from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorCore
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txproxy.config import (
    BALANCER_NAMES,
    HTTP_LIMITS,
    TCP_LIMITS,
    TLS,
    Access,
    Admin,
    Cache,
    Certificate,
    Compression,
    ConfigError,
    HealthCheck,
    HTTPListener,
    InvalidConfiguration,
    Limits,
    PassiveCheck,
    Pool,
    Proxy,
    RateLimit,
    Route,
    Server,
    TCPListener,
    UpstreamTLS,
    load,
)
from txproxy.interfaces import IBalancer, IServerView, IServiceFactory, PickContext

DESIGN_EXAMPLE = """\
from txproxy.config import (Proxy, Pool, Server, HealthCheck, HTTPListener,
                            TCPListener, Route, TLS, Cache, Compression,
                            RateLimit, Access, Limits, Admin)

api = Pool(
    "api",
    servers=[Server("127.0.0.1:9001"), Server("127.0.0.1:9002", weight=3),
             Server("127.0.0.1:9003", backup=True)],
    balancer="least_connections",   # or an IBalancer provider
    health=HealthCheck(path="/healthz", interval=2.0, timeout=1.0, rise=2, fall=3),
)
db = Pool("db", servers=[Server("127.0.0.1:5432")], balancer="ip_hash",
          health=HealthCheck())     # no path: a TCP connect check

proxy = Proxy(
    listeners=[
        HTTPListener("tcp:8080", routes=[
            Route(pool=api, host="api.example.com", path="/v1/", strip_prefix=True),
            Route(pool=api, path="/static/", cache=Cache(), compression=Compression()),
            Route(pool=api, access=Access(allow=["127.0.0.0/8"]),
                  rate_limit=RateLimit(rate=100, burst=200)),
        ]),
        HTTPListener("tcp:8443", tls=TLS(certificates=["etc/certs/site.pem"]),
                     routes=[Route(pool=api)]),
        TCPListener("tcp:15432", pool=db),
    ],
    admin=Admin("tcp:9000:interface=127.0.0.1"),
)
"""


def _caller_line() -> int:
    """
    Return the line its caller is running.
    """
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def _pool(name: str = "api") -> Pool:
    """
    Make a pool of one server.
    """
    return Pool(name, [Server("127.0.0.1:8001")])


@implementer(IBalancer)
class _FirstAvailable:
    """
    A user's balancer: the first available server.
    """

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        Pick the first available server.
        """
        return next((server for server in servers if server.available), None)


@implementer(IServiceFactory)
class _Origins:
    """
    A user's service factory.
    """

    def make_service(self, reactor: IReactorCore) -> IService:
        """
        Make a service that does nothing.
        """
        return Service()


class _ConfigTestCase(SynchronousTestCase):
    """
    Checks shared by the tests of configuration classes.
    """

    def rejected(
        self, factory: Callable[..., object], *args: object, **kwargs: object
    ) -> tuple[str, str]:
        """
        Assert that a call raises L{ConfigError} and return its field and message.
        """
        error = self.assertRaises(ConfigError, factory, *args, **kwargs)
        return (error.field, error.message)

    def write(self, source: str) -> str:
        """
        Write a configuration file and return its path.
        """
        path = FilePath(self.mktemp()).siblingExtension(".py")
        path.parent().makedirs(ignoreExistingDirectory=True)
        path.setContent(textwrap.dedent(source).encode("utf-8"))
        return path.path

    def load_errors(self, source: str) -> tuple[str, list[str]]:
        """
        Load a configuration that must fail; return its path and its errors as text.
        """
        path = self.write(source)
        raised = self.assertRaises(InvalidConfiguration, load, path)
        return path, [str(error) for error in raised.errors]


class ConfigErrorTests(_ConfigTestCase):
    """
    Tests for L{ConfigError} and L{InvalidConfiguration}.
    """

    def test_str_names_file_line_call_field_and_message(self) -> None:
        """
        A L{ConfigError} reads as C{file:line: call: field: message}.
        """
        error = ConfigError(
            "my.py", 12, "Server('10.0.0.1:99999')", "address", "port must be 1-65535"
        )
        self.assertEqual(
            str(error), "my.py:12: Server('10.0.0.1:99999'): address: port must be 1-65535"
        )

    def test_str_leaves_out_unknown_parts(self) -> None:
        """
        A mistake of a whole file has no line, call or field, and its text leaves them out.
        """
        error = ConfigError("my.py", None, "", "", "cannot read the file: Permission denied")
        self.assertEqual(str(error), "my.py: cannot read the file: Permission denied")

    def test_invalid_configuration_lists_one_error_a_line(self) -> None:
        """
        L{InvalidConfiguration} reads as its errors, one a line.
        """
        errors = (
            ConfigError("a.py", 1, "Pool('a')", "retries", "must be at least 0, not -1"),
            ConfigError("a.py", 2, "Server('x')", "weight", "must be at least 1, not 0"),
        )
        self.assertEqual(
            str(InvalidConfiguration(errors)),
            "a.py:1: Pool('a'): retries: must be at least 0, not -1\n"
            "a.py:2: Server('x'): weight: must be at least 1, not 0",
        )

    def test_raised_at_once_outside_load(self) -> None:
        """
        Outside L{load}, a bad value raises at once, naming the line that made the object.
        """
        with self.assertRaises(ConfigError) as raised:
            Server("10.0.0.1:99999")
        line = _caller_line() - 1
        self.assertEqual(
            str(raised.exception),
            f"{__file__}:{line}: Server('10.0.0.1:99999'): address: port must be 1-65535",
        )


class ServerTests(_ConfigTestCase):
    """
    Tests for L{Server}.
    """

    def test_defaults(self) -> None:
        """
        A server has weight 1, is no backup, has no connection cap and speaks plain TCP.
        """
        server = Server("10.0.0.1:80")
        self.assertEqual(
            (server.weight, server.backup, server.max_connections, server.tls),
            (1, False, None, None),
        )

    def test_host_and_port(self) -> None:
        """
        C{host} and C{port} split the address; an IPv6 host loses its brackets.
        """
        ipv4, ipv6 = Server("10.0.0.1:80"), Server("[::1]:8080")
        self.assertEqual((ipv4.host, ipv4.port), ("10.0.0.1", 80))
        self.assertEqual((ipv6.host, ipv6.port), ("::1", 8080))

    def test_host_and_port_of_invalid_address(self) -> None:
        """
        C{host} and C{port} do not fail on an invalid address kept while errors are collected.
        """
        with validators.disabled():
            server = Server("nonsense")
        self.assertEqual((server.host, server.port), ("", 0))

    def test_port_out_of_range(self) -> None:
        """
        A port above 65535 or of 0 is refused.
        """
        self.assertEqual(self.rejected(Server, "x:99999"), ("address", "port must be 1-65535"))
        self.assertEqual(self.rejected(Server, "x:0"), ("address", "port must be 1-65535"))

    def test_address_without_port_or_host(self) -> None:
        """
        An address needs both a host and a port.
        """
        for address in ["10.0.0.1", ":80"]:
            self.assertEqual(
                self.rejected(Server, address),
                (
                    "address",
                    f"must be 'host:port', as '10.0.0.1:80' or '[::1]:80', not {address!r}",
                ),
            )

    def test_ipv6_needs_brackets(self) -> None:
        """
        An IPv6 host must be written in brackets, and inside them be an IPv6 address.
        """
        self.assertEqual(self.rejected(Server, "::1:80")[0], "address")
        self.assertEqual(self.rejected(Server, "[example.com]:80")[0], "address")

    def test_weight_zero(self) -> None:
        """
        A weight below 1 is refused.
        """
        self.assertEqual(
            self.rejected(Server, "x:80", weight=0), ("weight", "must be at least 1, not 0")
        )

    def test_weight_must_be_integer(self) -> None:
        """
        A weight that is not an integer is refused, and C{True} is no integer here.
        """
        self.assertEqual(
            self.rejected(Server, "x:80", weight=1.5), ("weight", "must be an integer, not 1.5")
        )
        self.assertEqual(
            self.rejected(Server, "x:80", weight=True), ("weight", "must be an integer, not True")
        )

    def test_upstream_tls(self) -> None:
        """
        C{tls} takes an L{UpstreamTLS}, whose client certificate is a path or a L{Certificate}.
        """
        certificate = Certificate("client.pem", key="client.key")
        server = Server("x:443", tls=UpstreamTLS(ca="ca.pem", client_certificate=certificate))
        self.assertEqual(server.tls, UpstreamTLS(ca="ca.pem", client_certificate=certificate))
        self.assertEqual(
            self.rejected(Server, "x:443", tls=True), ("tls", "must be an UpstreamTLS, not True")
        )
        self.assertEqual(self.rejected(UpstreamTLS, client_certificate=3)[0], "client_certificate")


class PoolTests(_ConfigTestCase):
    """
    Tests for L{Pool}.
    """

    def test_servers_stored_as_tuple(self) -> None:
        """
        The servers list is stored as a tuple, so a pool is immutable and hashable.
        """
        pool = Pool("api", [Server("x:1"), Server("x:2")])
        self.assertEqual(pool.servers, (Server("x:1"), Server("x:2")))
        self.assertEqual(hash(pool), hash(Pool("api", (Server("x:1"), Server("x:2")))))

    def test_no_servers(self) -> None:
        """
        A pool needs at least one server.
        """
        self.assertEqual(
            self.rejected(Pool, "api", []), ("servers", "a pool needs at least one server")
        )

    def test_servers_not_a_list(self) -> None:
        """
        Servers that are not a list are reported, not a C{TypeError}.
        """
        self.assertEqual(self.rejected(Pool, "api", 5), ("servers", "must be a list, not 5"))
        self.assertEqual(
            self.rejected(Pool, "api", "x:80"), ("servers", "must be a list, not 'x:80'")
        )

    def test_server_not_a_server(self) -> None:
        """
        Each server must be a L{Server}, and the error names its index.
        """
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1"), "x:2"]),
            ("servers[1]", "must be a Server, not 'x:2'"),
        )

    def test_duplicate_address(self) -> None:
        """
        One address may appear once in a pool.
        """
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1"), Server("x:2"), Server("x:1", weight=2)]),
            ("servers[2]", "duplicate address 'x:1' (also servers[0])"),
        )

    def test_known_balancer_names(self) -> None:
        """
        Each name of L{BALANCER_NAMES} is accepted.
        """
        for name in BALANCER_NAMES:
            self.assertEqual(Pool("api", [Server("x:1")], balancer=name).balancer, name)

    def test_unknown_balancer_name(self) -> None:
        """
        An unknown balancer name is refused with the list of known ones.
        """
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1")], balancer="fastest"),
            (
                "balancer",
                "must be one of 'ip_hash', 'least_connections', 'random', 'round_robin'"
                " or an IBalancer provider, not 'fastest'",
            ),
        )

    def test_balancer_provider(self) -> None:
        """
        A user's L{IBalancer} provider is accepted as it is.
        """
        balancer = _FirstAvailable()
        self.assertIs(Pool("api", [Server("x:1")], balancer=balancer).balancer, balancer)

    def test_name(self) -> None:
        """
        A pool name is letters, digits, C{_}, C{.} and C{-}.
        """
        self.assertEqual(Pool("api-v2.eu_1", [Server("x:1")]).name, "api-v2.eu_1")
        self.assertEqual(
            self.rejected(Pool, "my api", [Server("x:1")]),
            ("name", "must be letters, digits, '_', '.' and '-', not 'my api'"),
        )

    def test_retries_and_queue(self) -> None:
        """
        C{retries} and C{queue_size} may be 0 but not negative; C{queue_timeout} is positive.
        """
        self.assertEqual(Pool("api", [Server("x:1")], retries=0, queue_size=0).retries, 0)
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1")], retries=-1),
            ("retries", "must be at least 0, not -1"),
        )
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1")], queue_timeout=0),
            ("queue_timeout", "must be greater than 0, not 0"),
        )


class HealthCheckTests(_ConfigTestCase):
    """
    Tests for L{HealthCheck}.
    """

    def test_defaults(self) -> None:
        """
        Without a path, a health check is a TCP connect every 2 seconds.
        """
        check = HealthCheck()
        self.assertEqual(
            (check.path, check.interval, check.rise, check.fall, check.expect_status),
            (None, 2.0, 2, 3, (200, 399)),
        )

    def test_bad_values(self) -> None:
        """
        Path, interval, timeout, rise, fall, status range and jitter are each checked.
        """
        self.assertEqual(
            self.rejected(HealthCheck, path="healthz"),
            ("path", "must be a path starting with '/', not 'healthz'"),
        )
        self.assertEqual(
            self.rejected(HealthCheck, interval=0), ("interval", "must be greater than 0, not 0")
        )
        self.assertEqual(
            self.rejected(HealthCheck, timeout="1"), ("timeout", "must be a number, not '1'")
        )
        self.assertEqual(self.rejected(HealthCheck, fall=0), ("fall", "must be at least 1, not 0"))
        self.assertEqual(self.rejected(HealthCheck, expect_status=[399, 200])[0], "expect_status")
        self.assertEqual(
            self.rejected(HealthCheck, jitter=2), ("jitter", "must be from 0 to 1, not 2")
        )


class PassiveCheckTests(_ConfigTestCase):
    """
    Tests for L{PassiveCheck} and the pool settings of health at run time.
    """

    def test_defaults(self) -> None:
        """
        A pool has a passive check by default: 5 failures in a row eject a
        server for 30 to 300 seconds, at most half of the pool, 5xx not counted.
        """
        passive = Pool("api", [Server("x:1")]).passive
        self.assertEqual(passive, PassiveCheck())
        assert passive is not None
        self.assertEqual(
            (
                passive.consecutive_failures,
                passive.base_ejection,
                passive.max_ejection,
                passive.max_ejection_percent,
                passive.on_5xx,
            ),
            (5, 30.0, 300.0, 50, False),
        )

    def test_off_and_slow_start(self) -> None:
        """
        C{passive=None} turns passive checks off; C{slow_start} is 0 (none)
        unless given.
        """
        pool = Pool("api", [Server("x:1")], passive=None, slow_start=30)
        self.assertEqual((pool.passive, pool.slow_start), (None, 30))
        self.assertEqual(Pool("api", [Server("x:1")]).slow_start, 0.0)

    def test_bad_values(self) -> None:
        """
        Each setting is checked, and the longest ejection may not be shorter
        than the first.
        """
        self.assertEqual(
            self.rejected(PassiveCheck, consecutive_failures=0),
            ("consecutive_failures", "must be at least 1, not 0"),
        )
        self.assertEqual(
            self.rejected(PassiveCheck, base_ejection=0),
            ("base_ejection", "must be greater than 0, not 0"),
        )
        self.assertEqual(
            self.rejected(PassiveCheck, max_ejection_percent=101),
            ("max_ejection_percent", "must be 0-100, not 101"),
        )
        self.assertEqual(
            self.rejected(PassiveCheck, on_5xx="yes"), ("on_5xx", "must be a bool, not 'yes'")
        )
        self.assertEqual(
            self.rejected(PassiveCheck, base_ejection=60, max_ejection=10),
            ("max_ejection", "must be at least base_ejection (60), not 10"),
        )

    def test_pool_settings_checked(self) -> None:
        """
        A pool's C{passive} must be a L{PassiveCheck} or L{None}, and its
        C{slow_start} a number of seconds, 0 or more.
        """
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1")], passive=True),
            ("passive", "must be a PassiveCheck, not True"),
        )
        self.assertEqual(
            self.rejected(Pool, "api", [Server("x:1")], slow_start=-1),
            ("slow_start", "must be at least 0, not -1"),
        )

    def test_reported_with_line_by_load(self) -> None:
        """
        In a file, a bad passive check is reported with its line, among the others.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import HTTPListener, PassiveCheck, Pool, Proxy, Route, Server
            passive = PassiveCheck(consecutive_failures=0)
            pool = Pool("api", [Server("127.0.0.1:8001")], passive=passive, slow_start="1")
            proxy = Proxy([HTTPListener("tcp:8080", routes=[Route(pool)])])
            """
        )
        self.assertEqual(
            errors,
            [
                f"{path}:2: PassiveCheck(...): consecutive_failures: must be at least 1, not 0",
                f"{path}:3: Pool('api'): slow_start: must be a number, not '1'",
            ],
        )


class LimitsTests(_ConfigTestCase):
    """
    Tests for L{Limits}, L{HTTP_LIMITS} and L{TCP_LIMITS}.
    """

    def test_over_fills_inherited_limits(self) -> None:
        """
        C{over} takes each limit left at L{None} from its base and keeps the others.
        """
        route = Limits(max_body=1024)
        listener = Limits(max_body=0, client_idle_timeout=30.0)
        self.assertEqual(
            route.over(listener.over(HTTP_LIMITS)),
            Limits(
                max_body=1024,
                max_header_size=16384,
                max_headers=100,
                client_header_timeout=60.0,
                client_idle_timeout=30.0,
                upstream_connect_timeout=5.0,
                upstream_response_timeout=60.0,
            ),
        )

    def test_defaults_set_every_limit(self) -> None:
        """
        L{HTTP_LIMITS} and L{TCP_LIMITS} leave nothing to inherit; TCP keeps idle
        connections longer.
        """
        for defaults in (HTTP_LIMITS, TCP_LIMITS):
            self.assertEqual(Limits().over(defaults), defaults)
            self.assertNotIn(
                None, [getattr(defaults, name) for name in ("max_body", "max_headers")]
            )
        self.assertEqual(TCP_LIMITS.client_idle_timeout, 600.0)

    def test_bad_values(self) -> None:
        """
        Sizes may be 0, counts must be at least 1 and timeouts positive.
        """
        self.assertEqual(Limits(max_body=0).max_body, 0)
        self.assertEqual(
            self.rejected(Limits, max_body=-1), ("max_body", "must be at least 0, not -1")
        )
        self.assertEqual(
            self.rejected(Limits, max_headers=0), ("max_headers", "must be at least 1, not 0")
        )
        self.assertEqual(
            self.rejected(Limits, client_idle_timeout=-5),
            ("client_idle_timeout", "must be greater than 0, not -5"),
        )


class RouteTests(_ConfigTestCase):
    """
    Tests for L{Route}.
    """

    def test_without_pool(self) -> None:
        """
        A route needs a pool.
        """
        self.assertEqual(self.rejected(Route, None), ("pool", "a route needs a pool"))
        self.assertEqual(self.rejected(Route, "api"), ("pool", "must be a Pool, not 'api'"))

    def test_host(self) -> None:
        """
        A host is a name or a C{*.} wildcard, stored in lower case.
        """
        self.assertEqual(Route(_pool(), host="API.Example.com").host, "api.example.com")
        self.assertEqual(Route(_pool(), host="*.example.com").host, "*.example.com")
        for host in ["exa mple.com", "*", "a.*.com", "-a.com", ""]:
            self.assertEqual(self.rejected(Route, _pool(), host=host)[0], "host")

    def test_path(self) -> None:
        """
        A path prefix starts with C{/}.
        """
        self.assertEqual(
            self.rejected(Route, _pool(), path="static/"),
            ("path", "must be a path starting with '/', not 'static/'"),
        )

    def test_headers(self) -> None:
        """
        Headers to match are stored as pairs, each value a string or a compiled pattern.
        """
        pattern = re.compile("^curl/")
        route = Route(_pool(), headers={"X-Env": "prod", "User-Agent": pattern})
        self.assertEqual(route.headers, (("X-Env", "prod"), ("User-Agent", pattern)))
        self.assertEqual(
            self.rejected(Route, _pool(), headers={"X Env": "prod"}),
            ("headers[0]", "must be a header name, not 'X Env'"),
        )
        self.assertEqual(
            self.rejected(Route, _pool(), headers={"X-Env": 1}),
            (
                "headers[0]",
                "the value of 'X-Env' must be a str or a compiled regular expression, not 1",
            ),
        )

    def test_methods(self) -> None:
        """
        Methods are stored as a frozenset of upper-case tokens.
        """
        self.assertEqual(
            Route(_pool(), methods=["GET", "HEAD"]).methods, frozenset({"GET", "HEAD"})
        )
        self.assertEqual(
            self.rejected(Route, _pool(), methods=["get"]),
            ("methods", "must be an upper-case method such as 'GET', not 'get'"),
        )
        self.assertEqual(self.rejected(Route, _pool(), methods="GET")[0], "methods")
        self.assertEqual(self.rejected(Route, _pool(), methods=[[]])[0], "methods[0]")

    def test_rewrite_compiled(self) -> None:
        """
        A rewrite pattern given as a string is compiled.
        """
        route = Route(_pool(), rewrite=(r"^/old/(.*)", r"/new/\1"))
        self.assertEqual(route.rewrite, (re.compile(r"^/old/(.*)"), r"/new/\1"))

    def test_rewrite_bad_regex(self) -> None:
        """
        A rewrite pattern that does not compile is reported with the regex error.
        """
        self.assertEqual(
            self.rejected(Route, _pool(), rewrite=("(", "x")),
            (
                "rewrite",
                "bad regular expression '(': missing ), unterminated subpattern at position 0",
            ),
        )

    def test_rewrite_bad_replacement(self) -> None:
        """
        A replacement that names a group the pattern lacks is reported.
        """
        self.assertEqual(
            self.rejected(Route, _pool(), rewrite=("(a)", r"\2")),
            ("rewrite", r"bad replacement '\\2': invalid group reference 2 at position 1"),
        )

    def test_header_changes(self) -> None:
        """
        Headers to set are pairs of name and value without CR or LF; headers to remove, names.
        """
        route = Route(
            _pool(), set_request_headers={"X-Proxy": "txproxy"}, remove_response_headers=["Via"]
        )
        self.assertEqual(
            (route.set_request_headers, route.remove_response_headers),
            ((("X-Proxy", "txproxy"),), ("Via",)),
        )
        self.assertEqual(
            self.rejected(Route, _pool(), set_response_headers={"X-A": "a\r\nX-B: b"}),
            (
                "set_response_headers[0]",
                "the value of 'X-A' must not contain CR, LF or NUL: 'a\\r\\nX-B: b'",
            ),
        )
        self.assertEqual(
            self.rejected(Route, _pool(), remove_request_headers=["Bad Name"])[0],
            "remove_request_headers[0]",
        )

    def test_policies(self) -> None:
        """
        Cache, compression, access, rate limit and limits each take their own class.
        """
        self.assertEqual(
            self.rejected(Route, _pool(), cache=True), ("cache", "must be a Cache, not True")
        )
        self.assertEqual(
            self.rejected(Route, _pool(), limits={}), ("limits", "must be a Limits, not dict")
        )


_MISSING = object()


def _restore_module(name: str, module: object) -> None:
    """
    Put back the entry of C{sys.modules} for C{name}, or remove it if C{module} is C{_MISSING}.
    """
    if module is _MISSING:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = module  # type: ignore[assignment]


class CacheAndCompressionTests(_ConfigTestCase):
    """
    Tests for L{Cache} and L{Compression}.
    """

    def test_object_larger_than_cache(self) -> None:
        """
        One object may not be larger than the whole cache.
        """
        self.assertEqual(
            self.rejected(Cache, max_size=1000, max_object_size=2000),
            ("max_object_size", "must be at most max_size (1000), not 2000"),
        )

    def test_cache_windows(self) -> None:
        """
        The stale windows and the collapse timeout are seconds, at least 0;
        by default nothing stale is served and requests wait 5 seconds for a
        fetch under way.
        """
        cache = Cache()
        self.assertEqual(
            (cache.stale_while_revalidate, cache.stale_if_error, cache.collapse_timeout),
            (0.0, 0.0, 5.0),
        )
        self.assertEqual(Cache(stale_while_revalidate=30).stale_while_revalidate, 30)
        self.assertEqual(Cache(collapse_timeout=0).collapse_timeout, 0)
        self.assertEqual(
            self.rejected(Cache, stale_while_revalidate=-1),
            ("stale_while_revalidate", "must be at least 0, not -1"),
        )
        self.assertEqual(
            self.rejected(Cache, collapse_timeout="5"),
            ("collapse_timeout", "must be a number, not '5'"),
        )

    def test_cache_key(self) -> None:
        """
        A cache key is a function of the URL and the request head, or L{None}.
        """

        def key(url: str, head: object) -> str:
            return url

        self.assertIs(Cache(key=key).key, key)
        self.assertIsNone(Cache().key)
        self.assertEqual(
            self.rejected(Cache, key="url"),
            ("key", "must be a function of (url, head), not 'url'"),
        )
        self.assertEqual(
            self.rejected(Cache, key=lambda url: url),
            ("key", "must take two arguments, the URL and the request head"),
        )

    def test_compression_level_and_algorithms(self) -> None:
        """
        The level is 1-9 and the algorithms are C{br}, C{gzip} and C{zstd}.
        """
        self.assertEqual(Compression(algorithms=["gzip"]).algorithms, ("gzip",))
        self.assertEqual(self.rejected(Compression, level=10), ("level", "must be 1-9, not 10"))
        self.assertEqual(
            self.rejected(Compression, algorithms=["gzip", "deflate"]),
            ("algorithms[1]", "must be one of 'br', 'gzip', 'zstd', not 'deflate'"),
        )

    def test_compression_types(self) -> None:
        """
        Media types may be patterns such as C{text/*}; a type needs a slash.
        """
        self.assertEqual(
            Compression(types=["text/*", "application/json"]).types,
            ("text/*", "application/json"),
        )
        self.assertEqual(self.rejected(Compression, types=["json"])[0], "types[0]")

    def test_zstd_needs_zstandard(self) -> None:
        """
        C{zstd} is accepted when the C{zstandard} package can be imported, and
        rejected, naming the package, when it cannot.
        """
        if importlib.util.find_spec("zstandard") is not None:
            self.assertEqual(Compression(algorithms=["zstd"]).algorithms, ("zstd",))
        # importlib finds no module that sys.modules maps to None.
        self.addCleanup(_restore_module, "zstandard", sys.modules.get("zstandard", _MISSING))
        sys.modules["zstandard"] = None  # type: ignore[assignment]
        self.assertEqual(
            self.rejected(Compression, algorithms=["br", "zstd"]),
            ("algorithms[1]", "needs the zstandard package: pip install 'txproxy[zstd]'"),
        )


class RateLimitAndAccessTests(_ConfigTestCase):
    """
    Tests for L{RateLimit} and L{Access}.
    """

    def test_rate_limit(self) -> None:
        """
        A rate is positive, and a key is C{client} or C{header:} and a name.
        """
        self.assertEqual(RateLimit(10, key="header:X-Api-Key").key, "header:X-Api-Key")
        self.assertEqual(self.rejected(RateLimit, 0), ("rate", "must be greater than 0, not 0"))
        self.assertEqual(
            self.rejected(RateLimit, 10, key="cookie"),
            ("key", "must be 'client' or 'header:<name>', not 'cookie'"),
        )

    def test_access_networks_parsed(self) -> None:
        """
        Access rules are stored as networks; a single address is a network of one.
        """
        access = Access(allow=["10.1.2.3/8", "::1"], deny=["10.0.0.5"])
        self.assertEqual(access.allow, (ip_network("10.0.0.0/8"), ip_network("::1/128")))
        self.assertEqual(access.deny, (ip_network("10.0.0.5/32"),))

    def test_access_bad_network(self) -> None:
        """
        A rule that is not a network is reported with the reason.
        """
        self.assertEqual(
            self.rejected(Access, allow=["10.0.0.0/8", "10.0.0.300"]),
            ("allow[1]", "'10.0.0.300' does not appear to be an IPv4 or IPv6 network"),
        )


class TLSTests(_ConfigTestCase):
    """
    Tests for L{TLS} and L{Certificate}.
    """

    def test_certificates(self) -> None:
        """
        Certificates are paths or L{Certificate}s, at least one.
        """
        tls = TLS([Certificate("a.pem", key="a.key"), "b.pem"])
        self.assertEqual(tls.certificates, (Certificate("a.pem", key="a.key"), "b.pem"))
        self.assertEqual(
            self.rejected(TLS, []), ("certificates", "TLS needs at least one certificate")
        )

    def test_client_verification_needs_authority(self) -> None:
        """
        Verifying clients needs the authorities their certificates come from.
        """
        self.assertEqual(
            TLS(["a.pem"], client_ca="ca.pem", verify_client="required").client_ca, "ca.pem"
        )
        self.assertEqual(
            self.rejected(TLS, ["a.pem"], verify_client="optional"),
            ("client_ca", "needed when verify_client is 'optional'"),
        )
        self.assertEqual(
            self.rejected(TLS, ["a.pem"], verify_client="yes"),
            ("verify_client", "must be one of 'none', 'optional', 'required', not 'yes'"),
        )

    def test_min_version(self) -> None:
        """
        The oldest protocol allowed is TLS 1.2.
        """
        self.assertEqual(
            self.rejected(TLS, ["a.pem"], min_version="TLSv1.1"),
            ("min_version", "must be one of 'TLSv1.2', 'TLSv1.3', not 'TLSv1.1'"),
        )


class EndpointTests(_ConfigTestCase):
    """
    Tests for the endpoints of L{HTTPListener}, L{TCPListener} and L{Admin}.
    """

    def test_valid_endpoints(self) -> None:
        """
        Endpoint strings that Twisted's parser builds are accepted.
        """
        for endpoint in ["tcp:8080", "tcp:port=8080", "tcp:0:interface=127.0.0.1", "unix:/tmp/s"]:
            self.assertEqual(HTTPListener(endpoint).endpoint, endpoint)

    def test_unknown_type(self) -> None:
        """
        An endpoint Twisted cannot parse is reported with Twisted's reason.
        """
        self.assertEqual(
            self.rejected(HTTPListener, "foo:8080"),
            ("endpoint", "not a valid endpoint: Unknown endpoint type: 'foo'"),
        )
        self.assertEqual(
            self.rejected(Admin, "tcp:http"),
            ("endpoint", "not a valid endpoint: invalid literal for int() with base 10: 'http'"),
        )

    def test_port_out_of_range(self) -> None:
        """
        A TCP port above 65535 is refused.
        """
        self.assertEqual(
            self.rejected(TCPListener, "tcp:70000", pool=_pool()),
            ("endpoint", "port must be 0-65535"),
        )

    def test_not_a_string(self) -> None:
        """
        An endpoint is a string.
        """
        self.assertEqual(
            self.rejected(HTTPListener, 8080),
            ("endpoint", "must be an endpoint string such as 'tcp:8080', not 8080"),
        )


class HTTPListenerTests(_ConfigTestCase):
    """
    Tests for L{HTTPListener}'s own fields.
    """

    def test_http_to_https(self) -> None:
        """
        A plain listener may redirect to an HTTPS port and needs no routes
        then; a TLS listener may not, and the port must be a port.
        """
        self.assertEqual(HTTPListener("tcp:80", http_to_https=443).http_to_https, 443)
        self.assertEqual(
            self.rejected(
                HTTPListener, "tcp:443", tls=TLS(certificates=["site.pem"]), http_to_https=443
            ),
            ("http_to_https", "only a plain listener redirects to HTTPS"),
        )
        self.assertEqual(
            self.rejected(HTTPListener, "tcp:80", http_to_https=0),
            ("http_to_https", "must be 1-65535, not 0"),
        )

    def test_http2_flags(self) -> None:
        """
        HTTP/2 is offered by ALPN unless turned off; h2c is off unless turned on.
        """
        listener = HTTPListener("tcp:80")
        self.assertEqual((listener.http2, listener.h2c), (True, False))
        self.assertEqual(self.rejected(HTTPListener, "tcp:80", h2c="yes")[0], "h2c")


class TCPListenerTests(_ConfigTestCase):
    """
    Tests for L{TCPListener}.
    """

    def test_needs_pool_or_sni_routes(self) -> None:
        """
        A TCP listener sends its connections to a pool, or by SNI to pools.
        """
        self.assertEqual(
            self.rejected(TCPListener, "tcp:5432"),
            ("pool", "a TCP listener needs a pool or sni_routes"),
        )
        self.assertIsNone(TCPListener("tcp:443", sni_routes={"a.example.com": _pool()}).pool)

    def test_sni_routes_not_with_tls(self) -> None:
        """
        SNI routes pass TLS through, so a listener terminating TLS has none.
        """
        self.assertEqual(
            self.rejected(
                TCPListener,
                "tcp:443",
                tls=TLS(certificates=["site.pem"]),
                sni_routes={"a.example.com": _pool()},
            ),
            (
                "sni_routes",
                "SNI routes pass TLS through untouched; a listener with tls= terminates it",
            ),
        )

    def test_sni_routes_stored_as_pairs(self) -> None:
        """
        SNI routes are stored as pairs of a lower-case host pattern and a pool.
        """
        pool = _pool()
        listener = TCPListener("tcp:443", sni_routes={"*.Example.com": pool})
        self.assertEqual(listener.sni_routes, (("*.example.com", pool),))
        self.assertEqual(
            self.rejected(TCPListener, "tcp:443", sni_routes={"a.example.com": "api"}),
            ("sni_routes[0]", "the value of 'a.example.com' must be a Pool, not 'api'"),
        )


class ProxyTests(_ConfigTestCase):
    """
    Tests for L{Proxy} and the checks of a configuration as a whole.
    """

    def test_needs_listener(self) -> None:
        """
        A proxy needs at least one listener, each an HTTP or TCP one.
        """
        self.assertEqual(
            self.rejected(Proxy, []), ("listeners", "a proxy needs at least one listener")
        )
        self.assertEqual(
            self.rejected(Proxy, [Admin()]),
            ("listeners[0]", "must be an HTTPListener or a TCPListener, not Admin"),
        )

    def test_pool_shared_by_routes(self) -> None:
        """
        One pool may serve several routes and listeners.
        """
        api = _pool()
        proxy = Proxy(
            [HTTPListener("tcp:80", [Route(api), Route(api)]), TCPListener("tcp:81", pool=api)]
        )
        self.assertEqual(proxy.pools, (api,))

    def test_duplicate_pool_names(self) -> None:
        """
        Two pools of one name are refused, and the error names the line of both.
        """
        first = Pool("api", [Server("127.0.0.1:8001")])
        first_line = _caller_line() - 1
        second = Pool("api", [Server("127.0.0.1:8002")])
        second_line = _caller_line() - 1
        with self.assertRaises(ConfigError) as raised:
            Proxy([HTTPListener("tcp:80", [Route(first), Route(second, path="/b/")])])
        self.assertEqual(
            str(raised.exception),
            f"{__file__}:{second_line}: Pool('api'): name: "
            f"duplicate pool name 'api' (also at {__file__}:{first_line})",
        )

    def test_duplicate_endpoints(self) -> None:
        """
        Two listeners on one port and interface are refused, however the endpoints are written.
        """
        error = self.assertRaises(
            ConfigError,
            Proxy,
            [HTTPListener("tcp:8080"), TCPListener("tcp:port=8080", pool=_pool())],
        )
        self.assertEqual(error.call, "TCPListener('tcp:port=8080')")
        self.assertEqual(error.field, "endpoint")
        self.assertTrue(error.message.startswith("same endpoint as HTTPListener('tcp:8080') at "))

    def test_admin_endpoint_clashes(self) -> None:
        """
        A listener may not take the admin endpoint.
        """
        self.assertEqual(
            self.rejected(Proxy, [HTTPListener("tcp:9000:interface=127.0.0.1")], admin=Admin())[0],
            "endpoint",
        )

    def test_distinct_endpoints(self) -> None:
        """
        Port 0, picked by the system, never clashes, nor do different interfaces.
        """
        proxy = Proxy(
            [
                HTTPListener("tcp:0"),
                HTTPListener("tcp:0"),
                HTTPListener("tcp:8080"),
                HTTPListener("tcp:8080:interface=127.0.0.1"),
            ],
            admin=Admin(),
        )
        self.assertEqual(len(proxy.listeners), 4)

    def test_pools_in_order_first_seen(self) -> None:
        """
        C{pools} lists each pool once, listener by listener: route pools, then a TCP
        listener's pool, then its SNI route pools.
        """
        a, b, c, d, e = (_pool(name) for name in "abcde")
        proxy = Proxy(
            [
                HTTPListener("tcp:80", [Route(a), Route(b), Route(a)]),
                TCPListener("tcp:443", pool=c, sni_routes={"x.example.com": d, "y.example.com": b}),
                HTTPListener("tcp:81", [Route(e)]),
            ]
        )
        self.assertEqual(proxy.pools, (a, b, c, d, e))

    def test_services(self) -> None:
        """
        Services must provide L{IServiceFactory}.
        """
        origins = _Origins()
        self.assertEqual(Proxy([HTTPListener("tcp:80")], services=[origins]).services, (origins,))
        self.assertEqual(
            self.rejected(Proxy, [HTTPListener("tcp:80")], services=[object()]),
            ("services[0]", "must provide IServiceFactory, not object"),
        )

    def test_drain_timeout(self) -> None:
        """
        C{drain_timeout} is 30 seconds unless given; it must be a positive number.
        """
        self.assertEqual(Proxy([HTTPListener("tcp:80")]).drain_timeout, 30.0)
        self.assertEqual(Proxy([HTTPListener("tcp:80")], drain_timeout=0.5).drain_timeout, 0.5)
        self.assertEqual(
            self.rejected(Proxy, [HTTPListener("tcp:80")], drain_timeout=0),
            ("drain_timeout", "must be greater than 0, not 0"),
        )
        self.assertEqual(
            self.rejected(Proxy, [HTTPListener("tcp:80")], drain_timeout="soon")[0],
            "drain_timeout",
        )


class LoadTests(_ConfigTestCase):
    """
    Tests for L{load}.
    """

    def test_design_example(self) -> None:
        """
        The example of DESIGN.md loads.
        """
        proxy = load(self.write(DESIGN_EXAMPLE))
        self.assertEqual([pool.name for pool in proxy.pools], ["api", "db"])
        self.assertEqual(proxy.admin, Admin("tcp:9000:interface=127.0.0.1"))

    def test_every_error_with_its_line(self) -> None:
        """
        Three different mistakes are all reported, each with its line.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import HTTPListener, Pool, Proxy, Route, Server

            api = Pool("api", servers=[Server("10.0.0.1:99999")])
            web = Pool("web", servers=[Server("10.0.0.2:80", weight=0)])
            proxy = Proxy(listeners=[
                HTTPListener("tcp:8080", routes=[Route(api), Route(web, path="static")]),
            ])
            """
        )
        self.assertEqual(
            errors,
            [
                f"{path}:3: Server('10.0.0.1:99999'): address: port must be 1-65535",
                f"{path}:4: Server('10.0.0.2:80'): weight: must be at least 1, not 0",
                f"{path}:6: Route(...): path: must be a path starting with '/', not 'static'",
            ],
        )

    def test_errors_in_line_order(self) -> None:
        """
        Errors are listed by line, the inner calls of a statement after its first
        line, and the mistakes of the whole file last.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import Pool, Server

            pool = Pool(
                "a b",
                servers=[Server("x:0")],
            )
            """
        )
        self.assertEqual(
            errors,
            [
                f"{path}:3: Pool('a b'): name: "
                "must be letters, digits, '_', '.' and '-', not 'a b'",
                f"{path}:5: Server('x:0'): address: port must be 1-65535",
                f"{path}: proxy: not defined: the file must set proxy = Proxy(...)",
            ],
        )

    def test_syntax_error(self) -> None:
        """
        A syntax error is reported with its line.
        """
        path, errors = self.load_errors("proxy = 1\nproxy = = 2\n")
        self.assertEqual(errors, [f"{path}:2: SyntaxError: invalid syntax"])

    def test_file_raises(self) -> None:
        """
        An exception the file raises is reported at the deepest line of the file,
        after the mistakes found before it.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import Server
            server = Server("x:0")
            def broken():
                return {}["listeners"]
            proxy = broken()
            """
        )
        self.assertEqual(
            errors,
            [
                f"{path}:2: Server('x:0'): address: port must be 1-65535",
                f"{path}:4: KeyError: 'listeners'",
            ],
        )

    def test_missing_proxy(self) -> None:
        """
        A file that defines no C{proxy} is refused.
        """
        path, errors = self.load_errors("from txproxy.config import Proxy\n")
        self.assertEqual(
            errors, [f"{path}: proxy: not defined: the file must set proxy = Proxy(...)"]
        )

    def test_proxy_wrong_type(self) -> None:
        """
        A C{proxy} that is not a L{Proxy} is refused.
        """
        path, errors = self.load_errors("proxy = {'listeners': []}\n")
        self.assertEqual(errors, [f"{path}: proxy: must be a Proxy, not dict"])

    def test_missing_file(self) -> None:
        """
        A file that cannot be read is reported.
        """
        path = self.mktemp()
        raised = self.assertRaises(InvalidConfiguration, load, path)
        self.assertEqual(str(raised), f"{path}: cannot read the file: No such file or directory")

    def test_duplicate_pool_names(self) -> None:
        """
        Pools of one name are reported at the second, naming the line of the first.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import HTTPListener, Pool, Proxy, Route, Server
            a = Pool("api", [Server("10.0.0.1:80")])
            b = Pool("api", [Server("10.0.0.2:80")])
            proxy = Proxy([HTTPListener("tcp:80", [Route(a), Route(b, path="/b/")])])
            """
        )
        self.assertEqual(
            errors, [f"{path}:3: Pool('api'): name: duplicate pool name 'api' (also at {path}:2)"]
        )

    def test_duplicate_endpoints(self) -> None:
        """
        Listeners on one endpoint are reported at the second, naming the first.
        """
        path, errors = self.load_errors(
            """\
            from txproxy.config import HTTPListener, Proxy
            proxy = Proxy([
                HTTPListener("tcp:8080"),
                HTTPListener("tcp:port=8080"),
            ])
            """
        )
        self.assertEqual(
            errors,
            [
                f"{path}:4: HTTPListener('tcp:port=8080'): endpoint: "
                f"same endpoint as HTTPListener('tcp:8080') at {path}:3"
            ],
        )

    def test_raises_again_after_load(self) -> None:
        """
        Once L{load} returns, a bad value raises at once again.
        """
        self.load_errors("from txproxy.config import Server\nServer('x:0')\n")
        self.assertRaises(ConfigError, Server, "x:0")
