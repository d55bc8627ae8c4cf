# -*- test-case-name: tests.test_http_routing -*-
"""
Tests for L{txproxy.http.routing}.
"""

from __future__ import annotations

import re
import timeit

from twisted.trial.unittest import SynchronousTestCase

from txproxy.config import Pool, Route, Server
from txproxy.http.events import Headers, RequestHead
from txproxy.http.headers import HeaderEdits
from txproxy.http.routing import RoutePlan, Router, host_name

API = Pool("api", [Server("10.0.0.1:80")])
WEB = Pool("web", [Server("10.0.0.2:80"), Server("[2001:db8::2]:8080")])


def request(
    target: bytes = b"/",
    host: bytes | None = b"example.com",
    method: bytes = b"GET",
    headers: Headers = (),
) -> RequestHead:
    """
    Make a request head, its C{Host} field first among C{headers}.
    """
    if host is not None:
        headers = ((b"Host", host), *headers)
    return RequestHead(method, target, b"1.1", headers, host=host)


def plan(route: Route) -> RoutePlan:
    """
    Compile one route.
    """
    return RoutePlan.from_route(route)


class HostNameTests(SynchronousTestCase):
    """
    Tests for L{host_name}.
    """

    def test_port_removed(self) -> None:
        """
        The port is removed and the name lower-cased.
        """
        self.assertEqual(host_name(b"Api.Example.COM:8080"), b"api.example.com")
        self.assertEqual(host_name(b"example.com"), b"example.com")

    def test_trailing_dot_removed(self) -> None:
        """
        The trailing dot of a fully qualified name is removed, port or not.
        """
        self.assertEqual(host_name(b"example.com."), b"example.com")
        self.assertEqual(host_name(b"example.com.:80"), b"example.com")

    def test_ipv6(self) -> None:
        """
        An IPv6 literal keeps its brackets and colons; only a port after the
        bracket is removed.
        """
        self.assertEqual(host_name(b"[::1]:8080"), b"[::1]")
        self.assertEqual(host_name(b"[2001:DB8::1]"), b"[2001:db8::1]")

    def test_ipv4(self) -> None:
        """
        An IPv4 address loses its port.
        """
        self.assertEqual(host_name(b"192.0.2.1:80"), b"192.0.2.1")


class RouterTests(SynchronousTestCase):
    """
    Tests for L{Router}.
    """

    def test_no_routes(self) -> None:
        """
        With no routes, nothing matches.
        """
        self.assertIsNone(Router([]).match(request()))

    def test_any_request(self) -> None:
        """
        A route without criteria matches any request, even one without a host
        or with a target that is not a path.
        """
        router = Router([Route(API)])
        self.assertIs(router.match(request()), router.plans[0])
        self.assertIs(router.match(request(b"*", method=b"OPTIONS")), router.plans[0])
        self.assertIs(router.match(request(host=None)), router.plans[0])

    def test_host_exact(self) -> None:
        """
        A host route matches that host only.
        """
        router = Router([Route(API, host="api.example.com")])
        self.assertIsNotNone(router.match(request(host=b"api.example.com")))
        self.assertIsNone(router.match(request(host=b"www.example.com")))
        self.assertIsNone(router.match(request(host=b"xapi.example.com")))
        self.assertIsNone(router.match(request(host=b"api.example.com.evil")))

    def test_host_case_insensitive(self) -> None:
        """
        Hosts match whatever the case of the route or the request.
        """
        router = Router([Route(API, host="API.Example.com")])
        self.assertIsNotNone(router.match(request(host=b"api.EXAMPLE.com")))

    def test_host_port_ignored(self) -> None:
        """
        The port of the C{Host} value is ignored.
        """
        router = Router([Route(API, host="api.example.com")])
        self.assertIsNotNone(router.match(request(host=b"api.example.com:8080")))

    def test_host_trailing_dot(self) -> None:
        """
        A host with a trailing dot matches the route of the host without it.
        """
        router = Router([Route(API, host="api.example.com")])
        self.assertIsNotNone(router.match(request(host=b"api.example.com.")))

    def test_host_wildcard(self) -> None:
        """
        C{*.example.com} matches any name ending in C{.example.com}, at any
        depth, and not C{example.com} itself.
        """
        router = Router([Route(API, host="*.example.com")])
        self.assertIsNotNone(router.match(request(host=b"a.example.com")))
        self.assertIsNotNone(router.match(request(host=b"A.B.Example.com:443")))
        self.assertIsNone(router.match(request(host=b"example.com")))
        self.assertIsNone(router.match(request(host=b"aexample.com")))
        self.assertIsNone(router.match(request(host=b".example.com")))

    def test_host_route_needs_host(self) -> None:
        """
        A request without C{Host} matches no host route.
        """
        router = Router([Route(API, host="example.com"), Route(WEB, host="*.example.com")])
        self.assertIsNone(router.match(request(host=None)))

    def test_ipv6_host(self) -> None:
        """
        An IPv6 literal C{Host}, with or without port, matches a route for any
        host and no route for a name.
        """
        router = Router([Route(API, host="1"), Route(WEB)])
        for host in (b"[::1]:8080", b"[::1]", b"[2001:db8::1]:80"):
            matched = router.match(request(host=host))
            assert matched is not None
            self.assertEqual(matched.pool_name, "web")

    def test_ipv4_host(self) -> None:
        """
        A route may name an IPv4 address as its host.
        """
        router = Router([Route(API, host="192.0.2.1")])
        self.assertIsNotNone(router.match(request(host=b"192.0.2.1:8080")))
        self.assertIsNone(router.match(request(host=b"192.0.2.10")))

    def test_path_prefix(self) -> None:
        """
        A path route matches the paths it prefixes, byte by byte, the query
        left out.
        """
        router = Router([Route(API, path="/v1/")])
        self.assertIsNotNone(router.match(request(b"/v1/")))
        self.assertIsNotNone(router.match(request(b"/v1/users?a=1")))
        self.assertIsNone(router.match(request(b"/v1")))
        self.assertIsNone(router.match(request(b"/V1/users")))
        self.assertIsNone(router.match(request(b"/v2/users")))
        self.assertIsNone(router.match(request(b"/?x=/v1/")))

    def test_headers_exact(self) -> None:
        """
        A str header value matches exactly the value of any field of that
        name, whatever the case of the name.
        """
        router = Router([Route(API, headers={"X-Env": "prod"})])
        self.assertIsNotNone(router.match(request(headers=((b"x-env", b"prod"),))))
        self.assertIsNotNone(
            router.match(request(headers=((b"X-Env", b"test"), (b"X-ENV", b"prod"))))
        )
        self.assertIsNone(router.match(request(headers=((b"X-Env", b"Prod"),))))
        self.assertIsNone(router.match(request(headers=((b"X-Env", b"prod2"),))))
        self.assertIsNone(router.match(request(headers=((b"X-Other", b"prod"),))))
        self.assertIsNone(router.match(request()))

    def test_headers_regex(self) -> None:
        """
        A compiled pattern matches a value in which it is found.
        """
        router = Router([Route(API, headers={"User-Agent": re.compile(r"curl/\d")})])
        self.assertIsNotNone(router.match(request(headers=((b"User-Agent", b"curl/8.5.0"),))))
        self.assertIsNotNone(router.match(request(headers=((b"user-agent", b"x curl/7"),))))
        self.assertIsNone(router.match(request(headers=((b"User-Agent", b"Mozilla/5.0"),))))

    def test_headers_regex_non_ascii(self) -> None:
        """
        A pattern is matched against a value read as UTF-8, and a value that
        is not UTF-8 does not break matching.
        """
        router = Router([Route(API, headers={"X-Name": re.compile("^café$")})])
        self.assertIsNotNone(router.match(request(headers=((b"X-Name", b"caf\xc3\xa9"),))))
        self.assertIsNone(router.match(request(headers=((b"X-Name", b"caf\xe9"),))))

    def test_headers_all_needed(self) -> None:
        """
        Every header criterion must match.
        """
        router = Router([Route(API, headers={"A": "1", "B": re.compile("2")})])
        self.assertIsNotNone(router.match(request(headers=((b"A", b"1"), (b"B", b"x2")))))
        self.assertIsNone(router.match(request(headers=((b"A", b"1"),))))
        self.assertIsNone(router.match(request(headers=((b"B", b"2"),))))

    def test_methods(self) -> None:
        """
        A route with methods matches only those.
        """
        router = Router([Route(API, methods=["GET", "HEAD"])])
        self.assertIsNotNone(router.match(request(method=b"GET")))
        self.assertIsNotNone(router.match(request(method=b"HEAD")))
        self.assertIsNone(router.match(request(method=b"POST")))
        self.assertIsNone(router.match(request(method=b"get")))

    def test_first_match_wins(self) -> None:
        """
        Routes are tried in order and the first that matches wins, even when
        a later one matches more closely.
        """
        router = Router(
            [
                Route(API, host="api.example.com"),
                Route(WEB, path="/static/"),
                Route(API, path="/static/images/"),
                Route(WEB),
            ]
        )
        first, second, _, last = router.plans
        self.assertIs(router.match(request(b"/static/a", b"api.example.com")), first)
        self.assertIs(router.match(request(b"/static/images/a")), second)
        self.assertIs(router.match(request(b"/other")), last)

    def test_no_match(self) -> None:
        """
        A request that no route matches gets L{None}.
        """
        router = Router([Route(API, host="api.example.com"), Route(WEB, path="/static/")])
        self.assertIsNone(router.match(request(b"/other", b"www.example.com")))

    def test_plans(self) -> None:
        """
        The plans keep the routes in order, with their pools' names and their
        header policy.
        """
        routes = [
            Route(API, set_request_headers={"X-A": "1"}, remove_response_headers=["X-B"]),
            Route(WEB, keep_server_headers=True),
        ]
        first, second = Router(routes).plans
        self.assertEqual([plan.route for plan in (first, second)], routes)
        self.assertEqual((first.pool_name, second.pool_name), ("api", "web"))
        self.assertEqual(first.request_edits, HeaderEdits(set=((b"X-A", b"1"),)))
        self.assertEqual(first.response_edits, HeaderEdits(remove=frozenset({b"x-b"})))
        self.assertEqual((first.keep_server_headers, second.keep_server_headers), (False, True))

    def test_fast(self) -> None:
        """
        With 20 routes, a request the last route takes is matched in well
        under 50 microseconds: the router compares bytes and does no more.
        """
        routes = [
            Route(API, host=f"h{n}.example.com", path=f"/p{n}/", methods=["GET"]) for n in range(19)
        ]
        routes.append(Route(WEB, host="*.example.org", headers={"X-Env": "prod"}))
        router = Router(routes)
        head = request(b"/x?y=1", b"www.example.org:8080", headers=((b"X-Env", b"prod"),))
        self.assertIs(router.match(head), router.plans[-1])
        seconds = min(timeit.repeat(lambda: router.match(head), number=1000, repeat=3)) / 1000
        self.assertLess(seconds, 50e-6)


class RoutePlanTests(SynchronousTestCase):
    """
    Tests for L{RoutePlan}.
    """

    def test_matches(self) -> None:
        """
        A plan says on its own whether it takes a request, as the router does.
        """
        route = plan(Route(API, host="*.example.com", path="/a/", methods=["PUT"]))
        self.assertTrue(route.matches(request(b"/a/b", b"x.Example.com:80", b"PUT")))
        self.assertFalse(route.matches(request(b"/a/b", b"x.example.com", b"GET")))
        self.assertFalse(route.matches(request(b"/a/b", None, b"PUT")))

    def test_target_unchanged(self) -> None:
        """
        A route that neither strips nor rewrites forwards the very target it
        received.
        """
        target = b"/v1/users?a=1"
        self.assertIs(plan(Route(API, path="/v1/")).forward_target(target), target)

    def test_strip_prefix(self) -> None:
        """
        C{strip_prefix} removes the route's path, keeping the path's leading
        C{/} and the query.
        """
        route = plan(Route(API, path="/v1/", strip_prefix=True))
        self.assertEqual(route.forward_target(b"/v1/users"), b"/users")
        self.assertEqual(route.forward_target(b"/v1/users?a=1&b=/v1/"), b"/users?a=1&b=/v1/")
        route = plan(Route(API, path="/v1", strip_prefix=True))
        self.assertEqual(route.forward_target(b"/v1/users"), b"/users")

    def test_strip_prefix_to_empty(self) -> None:
        """
        A path that is all prefix becomes C{/}, its query kept.
        """
        route = plan(Route(API, path="/v1", strip_prefix=True))
        self.assertEqual(route.forward_target(b"/v1"), b"/")
        self.assertEqual(route.forward_target(b"/v1?a=1"), b"/?a=1")
        route = plan(Route(API, path="/v1/", strip_prefix=True))
        self.assertEqual(route.forward_target(b"/v1/"), b"/")

    def test_strip_root(self) -> None:
        """
        Stripping the prefix C{/} changes nothing.
        """
        target = b"/a?b"
        self.assertIs(plan(Route(API, strip_prefix=True)).forward_target(target), target)

    def test_rewrite(self) -> None:
        """
        C{rewrite} substitutes its pattern in the path, not in the query.
        """
        route = plan(Route(API, rewrite=(r"^/old/(\w+)", r"/new/\1/index")))
        self.assertEqual(
            route.forward_target(b"/old/page.html?x=/old/y"), b"/new/page/index.html?x=/old/y"
        )
        self.assertEqual(route.forward_target(b"/other/old/page"), b"/other/old/page")

    def test_rewrite_after_strip(self) -> None:
        """
        The rewrite applies to the path already stripped of the prefix.
        """
        route = plan(Route(API, path="/api", strip_prefix=True, rewrite=("^/v1/", "/v2/")))
        self.assertEqual(route.forward_target(b"/api/v1/users?q"), b"/v2/users?q")

    def test_rewrite_to_empty(self) -> None:
        """
        A rewrite that leaves the path empty, or without its leading C{/},
        forwards an origin-form path.
        """
        route = plan(Route(API, rewrite=("^/drop", "")))
        self.assertEqual(route.forward_target(b"/drop"), b"/")
        self.assertEqual(route.forward_target(b"/dropped?q"), b"/ped?q")

    def test_rewrite_keeps_other_bytes(self) -> None:
        """
        Bytes of the path that are not UTF-8 pass a rewrite unchanged.
        """
        route = plan(Route(API, rewrite=("^/a/", "/b/")))
        self.assertEqual(route.forward_target(b"/a/\xff%20"), b"/b/\xff%20")
