# -*- test-case-name: tests.test_http_routing -*-
"""
Routing: the first configured route that matches a request head, and the target it forwards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attrs import evolve, frozen

from txproxy.config import Route
from txproxy.http.events import Headers, RequestHead
from txproxy.http.headers import HeaderEdits

__all__ = ["RoutePlan", "Router", "host_name"]

# Request bytes are matched against the configuration's str patterns as
# UTF-8; surrogateescape keeps any other byte, so a rewrite changes only what
# its pattern matched.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def host_name(host: bytes) -> bytes:
    """
    The name of a C{Host} value, for matching: in lower case, without port.

    A trailing dot is removed too, since C{example.com.} names the same host
    as C{example.com} and must not slip past its route. An IPv6 literal keeps
    its brackets (RFC 3986 3.2.2), so that its colons are not taken for a port.

    @param host: the C{Host} field value, such as C{b"Example.com:8080"} or
        C{b"[::1]:8080"}.
    """
    if host[:1] == b"[":
        end = host.find(b"]")
        name = host if end < 0 else host[: end + 1]
    else:
        name = host.partition(b":")[0]
    if name[-1:] == b".":
        name = name[:-1]
    return name.lower()


def _encoded(text: str) -> bytes:
    """
    Encode a str of the configuration as request bytes are decoded to match it.
    """
    return text.encode(_ENCODING, _ERRORS)


def _origin_path(path: bytes) -> bytes:
    """
    Make a rewritten path an origin-form path: C{/} for nothing, else starting with C{/}.
    """
    if path[:1] == b"/":
        return path
    return b"/" + path


@frozen
class RoutePlan:
    """
    One configured route, compiled for matching requests and forwarding them.

    Everything a request is compared with is made bytes, lower case where
    matching ignores case, when the plan is made, so that matching does no
    more than compare.

    @ivar route: the configured route.
    @ivar pool_name: the name of the route's pool.
    @ivar request_edits: the header edits of forwarded requests.
    @ivar response_edits: the header edits of forwarded responses.
    @ivar keep_server_headers: whether responses keep the fields naming the
        server's software.
    """

    route: Route
    pool_name: str
    request_edits: HeaderEdits
    response_edits: HeaderEdits
    keep_server_headers: bool
    # The host to match exactly, or the suffix (".example.com") of a wildcard.
    _host: bytes | None
    _host_suffix: bytes | None
    # None for any path: "/" is every origin-form target, and "*" too.
    _path: bytes | None
    # (lower-case name, exact bytes value or a str pattern) pairs.
    _headers: tuple[tuple[bytes, bytes | re.Pattern[str]], ...]
    _methods: frozenset[bytes] | None
    # How many bytes to strip off the path, or 0.
    _strip: int
    _rewrite: tuple[re.Pattern[str], str] | None

    @classmethod
    def from_route(cls, route: Route) -> RoutePlan:
        """
        Compile a configured route.
        """
        host = route.host
        headers = tuple(
            (name.lower().encode("ascii"), _encoded(value) if isinstance(value, str) else value)
            for name, value in route.headers
        )
        methods = route.methods
        return cls(
            route=route,
            pool_name=route.pool.name,
            request_edits=HeaderEdits.from_config(
                route.remove_request_headers, route.set_request_headers
            ),
            response_edits=HeaderEdits.from_config(
                route.remove_response_headers, route.set_response_headers
            ),
            keep_server_headers=route.keep_server_headers,
            host=None if host is None or host.startswith("*.") else _encoded(host),
            host_suffix=_encoded(host[1:]) if host is not None and host.startswith("*.") else None,
            path=None if route.path == "/" else _encoded(route.path),
            headers=headers,
            methods=None if methods is None else frozenset(_encoded(each) for each in methods),
            # Stripping "/" and putting it back would change nothing.
            strip=len(_encoded(route.path)) if route.strip_prefix and route.path != "/" else 0,
            rewrite=route.rewrite,
        )

    def matches(self, head: RequestHead) -> bool:
        """
        Whether this route takes a request.

        @param head: the request.
        """
        host = None if head.host is None else host_name(head.host)
        return self._accepts(head.method, host, head.path, head.headers)

    def _accepts(self, method: bytes, host: bytes | None, path: bytes, headers: Headers) -> bool:
        """
        Whether this route takes a request, its host and path already found.

        @param host: the request's L{host_name}, or L{None} when it has no host.
        """
        if self._methods is not None and method not in self._methods:
            return False
        if self._path is not None and not path.startswith(self._path):
            return False
        if self._host is not None:
            if host != self._host:
                return False
        elif self._host_suffix is not None:
            # "*.example.com" takes "a.example.com", not "example.com" nor
            # ".example.com".
            if (
                host is None
                or not host.endswith(self._host_suffix)
                or len(host) == len(self._host_suffix)
            ):
                return False
        for name, wanted in self._headers:
            if not _has_field(headers, name, wanted):
                return False
        return True

    def forward_target(self, target: bytes) -> bytes:
        """
        The request-target to send to the server.

        With C{strip_prefix}, the route's path is removed from the start of the
        path; then a C{rewrite} pattern is substituted in the path. The query
        is kept as it is. A path left empty becomes C{/}, and one left without
        its leading C{/} gets it back.

        @param target: the request-target received, which this route matched.
        @return: the target to send; C{target} itself when the route changes
            nothing.
        """
        if not self._strip and self._rewrite is None:
            return target
        path, mark, query = target.partition(b"?")
        if self._strip:
            path = _origin_path(path[self._strip :])
        if self._rewrite is not None:
            pattern, replacement = self._rewrite
            text = path.decode(_ENCODING, _ERRORS)
            path = _origin_path(_encoded(pattern.sub(replacement, text)))
        return path + mark + query


def _has_field(headers: Headers, name: bytes, wanted: bytes | re.Pattern[str]) -> bool:
    """
    Whether a field named C{name} has the value C{wanted}, or a value in which
    the pattern C{wanted} is found.
    """
    for field_name, value in headers:
        if field_name.lower() != name:
            continue
        if isinstance(wanted, bytes):
            if value == wanted:
                return True
        elif wanted.search(value.decode(_ENCODING, _ERRORS)) is not None:
            return True
    return False


_NO_EDITS = HeaderEdits()


class Router:
    """
    Routes requests: the first of a listener's routes that matches wins.

    @ivar plans: the compiled routes, in order.
    """

    __slots__ = ("plans", "_by_host")

    def __init__(
        self,
        routes: Sequence[Route],
        request_edits: HeaderEdits = _NO_EDITS,
        response_edits: HeaderEdits = _NO_EDITS,
    ) -> None:
        """
        Compile a listener's routes.

        @param routes: the routes, in order.
        @param request_edits: the listener's edits of every forwarded
            request, under each route's own.
        @param response_edits: the listener's edits of every forwarded
            response, under each route's own.
        """
        plans = (RoutePlan.from_route(route) for route in routes)
        self.plans = tuple(
            evolve(
                plan,
                request_edits=plan.request_edits.over(request_edits),
                response_edits=plan.response_edits.over(response_edits),
            )
            for plan in plans
        )
        self._by_host = any(
            plan._host is not None or plan._host_suffix is not None for plan in self.plans
        )

    def match(self, head: RequestHead) -> RoutePlan | None:
        """
        Find the route of a request.

        @param head: the request.
        @return: the first route that matches, or L{None} for none (txproxy
            answers 404).
        """
        host = None
        if self._by_host and head.host is not None:
            host = host_name(head.host)
        method = head.method
        path = head.path
        headers = head.headers
        for plan in self.plans:
            if plan._accepts(method, host, path, headers):
                return plan
        return None
