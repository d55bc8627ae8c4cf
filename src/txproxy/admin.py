# -*- test-case-name: tests.test_admin -*-
"""
The admin API: JSON over HTTP to read the pools and change their servers at run time.

L{AdminAPI} does the work on the runtime pools and says what went wrong with
exceptions carrying the facts; L{AdminResource} is only HTTP around it
(token, routing, JSON in and out); L{AdminSite} serves it so that
C{txproxy.listening.ListenerService} can run it beside the listeners.

With C{Admin(token=...)} set, every request must send C{Authorization:
Bearer <token>} (RFC 6750; C{curl --oauth2-bearer TOKEN}); no other header
is taken, so that the token has one place to leak from and proxies and logs
already know to hide it. Requests with an C{Origin} header are refused
whatever the token, so that a web page cannot drive the API from an
operator's browser. A body is read as JSON whatever its C{Content-Type}.

Changes made here live in the running pools only: a reload (SIGHUP) starts
again from the configuration file, so a server added here and not written
into the file is gone after a reload, and one disabled here is back.

Endpoints, each answering JSON with C{Cache-Control: no-store}::

    GET    /pools                                      every pool and its servers
    GET    /pools/<pool>                               one pool
    POST   /pools/<pool>/servers                       add a server: {"address": "host:port",
                                                       "weight": 1, "backup": false,
                                                       "max_connections": null}; 201
    GET    /pools/<pool>/servers/<host:port>           one server
    DELETE /pools/<pool>/servers/<host:port>           drain, then remove once idle; 202
    POST   /pools/<pool>/servers/<host:port>/drain     finish work in flight, take nothing new
    POST   /pools/<pool>/servers/<host:port>/enable    undo drain or disable
    POST   /pools/<pool>/servers/<host:port>/disable   maintenance: health checks never undo it
    DELETE /cache?url=<absolute URL> | ?prefix=<URL>   purge the HTTP cache, when one is given

Errors answer C{{"error": "...", ...facts}}: 400 for bad input, 401 without
the right token, 403 for requests from web pages, 404 for an unknown pool,
server or path, 405 with C{Allow} for a wrong method, 409 for a server
address a pool already has, 413 for a body over L{MAX_BODY} bytes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from typing import IO, ClassVar, cast
from urllib.parse import quote, urlsplit

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import (
    ACCEPTED,
    BAD_REQUEST,
    CONFLICT,
    CREATED,
    FORBIDDEN,
    INTERNAL_SERVER_ERROR,
    NOT_ALLOWED,
    NOT_FOUND,
    OK,
    REQUEST_ENTITY_TOO_LARGE,
    UNAUTHORIZED,
    HTTPChannel,
)
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from txproxy import config
from txproxy.balancing import BALANCERS
from txproxy.connections import Connections
from txproxy.interfaces import ICachePurge
from txproxy.pool import WEIGHT_SCALE, DuplicateServer, NoSuchServer, Pool, ServerState

__all__ = [
    "MAX_BODY",
    "AdminAPI",
    "AdminError",
    "AdminResource",
    "AdminSite",
    "BadRequest",
    "BodyTooLarge",
    "BrowserRefused",
    "MethodNotAllowed",
    "NoCache",
    "NotFound",
    "ServerExists",
    "Unauthorized",
    "UnknownPath",
    "UnknownPool",
    "UnknownServer",
    "describe_pool",
    "describe_server",
    "read_json",
    "server_from_json",
]

MAX_BODY = 64 * 1024
"""
The most bytes of request body the admin API reads: a server is a few dozen.
"""

SERVER_FIELDS = ("address", "weight", "backup", "max_connections")
"""
The fields a server added through the API may have, as L{config.Server}'s
arguments of the same names. Upstream TLS needs files, so it is set in the
configuration file only.
"""

JSONObject = dict[str, object]

_OPERATED = {
    "drain": "admin: server {server} of pool {pool} drained by {client}, now {status}",
    "enable": "admin: server {server} of pool {pool} enabled by {client}, now {status}",
    "disable": "admin: server {server} of pool {pool} disabled by {client}, now {status}",
}


class AdminError(Exception):
    """
    A request the admin API refuses: its HTTP status and the JSON that says why.

    @cvar status: the HTTP status to answer with.
    """

    status: ClassVar[int] = INTERNAL_SERVER_ERROR

    def document(self) -> JSONObject:
        """
        The JSON error body: C{error}, a sentence, then the facts by name.
        """
        return {"error": str(self)}

    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        """
        Headers the answer must carry besides the JSON ones.
        """
        return ()


@frozen
class BadRequest(AdminError):
    """
    The request cannot be done as written: a body that is not JSON, a field
    of the wrong type or unknown, an address that is not C{host:port}.

    @ivar message: what is wrong.
    @ivar field: the field at fault, or L{None} for the request as a whole.
    """

    message: str
    field: str | None = None
    status = BAD_REQUEST

    def __str__(self) -> str:
        return self.message if self.field is None else f"{self.field}: {self.message}"

    def document(self) -> JSONObject:
        if self.field is None:
            return {"error": str(self)}
        return {"error": str(self), "field": self.field}


class NotFound(AdminError):
    """
    The request names something that does not exist.
    """

    status = NOT_FOUND


@frozen
class UnknownPool(NotFound):
    """
    No pool has the name a request gave.

    @ivar pool: the name given.
    """

    pool: str

    def __str__(self) -> str:
        return f"no pool {self.pool}"

    def document(self) -> JSONObject:
        return {"error": str(self), "pool": self.pool}


@frozen
class UnknownServer(NotFound):
    """
    A pool has no server at the address a request gave.

    @ivar pool: the pool's name.
    @ivar server: the address given.
    """

    pool: str
    server: str

    def __str__(self) -> str:
        return f"pool {self.pool} has no server {self.server}"

    def document(self) -> JSONObject:
        return {"error": str(self), "pool": self.pool, "server": self.server}


@frozen
class UnknownPath(NotFound):
    """
    No endpoint of the admin API has the path a request gave.

    @ivar path: the path, as received.
    """

    path: str

    def __str__(self) -> str:
        return f"no endpoint {self.path}"

    def document(self) -> JSONObject:
        return {"error": str(self), "path": self.path}


@frozen
class NoCache(NotFound):
    """
    The cache was asked to purge, but no route caches.
    """

    def __str__(self) -> str:
        return "no cache is configured"


@frozen
class ServerExists(AdminError):
    """
    A server was added at an address its pool already has (perhaps one still
    draining after a removal).

    @ivar pool: the pool's name.
    @ivar server: the address.
    """

    pool: str
    server: str
    status = CONFLICT

    def __str__(self) -> str:
        return f"pool {self.pool} already has a server {self.server}"

    def document(self) -> JSONObject:
        return {"error": str(self), "pool": self.pool, "server": self.server}


@frozen
class MethodNotAllowed(AdminError):
    """
    An endpoint was asked with a method it does not take.

    @ivar method: the method used.
    @ivar allowed: the methods it takes.
    """

    method: str
    allowed: tuple[str, ...]
    status = NOT_ALLOWED

    def __str__(self) -> str:
        return f"{self.method} is not allowed here; use {', '.join(self.allowed)}"

    def document(self) -> JSONObject:
        return {"error": str(self), "method": self.method, "allowed": list(self.allowed)}

    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        return [(b"allow", ", ".join(self.allowed).encode("ascii"))]


@frozen
class Unauthorized(AdminError):
    """
    The admin API has a token and the request did not give it.

    @ivar given: whether the request gave a token at all (a wrong one).
    """

    given: bool
    status = UNAUTHORIZED

    def __str__(self) -> str:
        if self.given:
            return "the token is wrong"
        return "a token is required: send Authorization: Bearer <token>"

    def headers(self) -> Sequence[tuple[bytes, bytes]]:
        # RFC 6750 section 3: a challenge, with the error once a token was sent.
        challenge = b'Bearer realm="txproxy"'
        if self.given:
            challenge += b', error="invalid_token"'
        return [(b"www-authenticate", challenge)]


@frozen
class BrowserRefused(AdminError):
    """
    A request came from a web page, which sends an C{Origin} header: the admin
    API is for operators and scripts, so that a page in a browser on the same
    machine cannot drive it (cross-site request forgery).

    @ivar origin: the C{Origin} header's value.
    """

    origin: str
    status = FORBIDDEN

    def __str__(self) -> str:
        return "requests from web pages (with an Origin header) are refused"

    def document(self) -> JSONObject:
        return {"error": str(self), "origin": self.origin}


@frozen
class BodyTooLarge(AdminError):
    """
    A request body was longer than the admin API reads.

    @ivar limit: the most bytes it reads.
    """

    limit: int
    status = REQUEST_ENTITY_TOO_LARGE

    def __str__(self) -> str:
        return f"the body is over {self.limit} bytes"

    def document(self) -> JSONObject:
        return {"error": str(self), "limit": self.limit}


def read_json(body: bytes) -> object:
    """
    Decode a request body as one JSON value, strictly, as RFC 8259 says.

    It must be UTF-8; an object may not repeat a name, since which value
    counts would be a guess; C{NaN} and C{Infinity} are not JSON.

    @raise BadRequest: when it is not such JSON, saying where it went wrong.
    """
    if not body.strip():
        raise BadRequest("the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_names, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise BadRequest(
            f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None


def _unique_names(pairs: list[tuple[str, object]]) -> JSONObject:
    """
    Make a JSON object, refusing one that repeats a name.
    """
    document: JSONObject = {}
    for name, value in pairs:
        if name in document:
            raise BadRequest(f"{name} is given twice", field=name)
        document[name] = value
    return document


def _no_constant(name: str) -> object:
    """
    Refuse C{NaN}, C{Infinity} and C{-Infinity}, which Python's decoder allows.
    """
    raise BadRequest(f"the body is not JSON: {name} is not a JSON value")


def server_from_json(document: object) -> config.Server:
    """
    Turn the JSON body of C{POST /pools/<pool>/servers} into a server's
    configuration, checked as the configuration file's servers are.

    @param document: the decoded body: an object with C{address} and any of
        C{weight}, C{backup} and C{max_connections}.
    @raise BadRequest: when it is not an object, lacks an address, has a
        field not in L{SERVER_FIELDS}, or L{config.Server} refuses a value;
        the field at fault is named.
    """
    if not isinstance(document, dict):
        raise BadRequest(
            'the body must be a JSON object, as {"address": "10.0.0.1:80", "weight": 1}'
        )
    fields = cast(JSONObject, document)
    unknown = sorted(set(fields) - set(SERVER_FIELDS))
    if unknown:
        raise BadRequest(
            f"unknown field; a server takes {', '.join(SERVER_FIELDS)}", field=unknown[0]
        )
    if "address" not in fields:
        raise BadRequest("is required, as 'host:port'", field="address")
    try:
        # config.Server checks each value's type and range itself: the casts
        # only tell the type checker what it will check.
        return config.Server(
            cast(str, fields["address"]),
            weight=cast(int, fields.get("weight", 1)),
            backup=cast(bool, fields.get("backup", False)),
            max_connections=cast("int | None", fields.get("max_connections")),
        )
    except config.ConfigError as error:
        raise BadRequest(error.message, field=error.field) from None


def describe_server(server: ServerState) -> JSONObject:
    """
    The JSON of one server: its settings, status, counters and last check.

    C{weight} is the configured weight, as C{POST} takes it;
    C{effective_weight} is the share balancers use now in the same units,
    lower while slow start ramps the server up.
    """
    check = server.last_check
    return {
        "address": server.address,
        "status": server.status.value,
        "weight": server.configured_weight,
        "effective_weight": server.weight / WEIGHT_SCALE,
        "backup": server.backup,
        "max_connections": server.max_connections,
        "active": server.active,
        "total": server.total,
        "fails": server.fails,
        "failures": server.failures,
        "healthy": server.healthy,
        "down_reason": server.down_reason,
        "last_check": None
        if check is None
        else {
            "time": check.time,
            "ok": check.ok,
            "reason": check.reason,
            "duration": check.duration,
        },
    }


def describe_pool(pool: Pool) -> JSONObject:
    """
    The JSON of one pool: its name, balancer, queue, slow start and servers,
    the servers in configuration order, then those added.
    """
    return {
        "name": pool.name,
        "balancer": _balancer_name(pool),
        "queue": {
            "size": pool.queue_size,
            "timeout": pool.queue_timeout,
            "waiting": pool.queued,
        },
        "slow_start": pool.slow_start,
        "servers": [describe_server(server) for server in pool.servers],
    }


def _balancer_name(pool: Pool) -> str:
    """
    The name a pool's balancer has in the configuration, or the dotted name
    of its class for an L{IBalancer} provider given as an object.
    """
    kind = type(pool.balancer)
    for name, factory in BALANCERS.items():
        if factory is kind:
            return name
    return f"{kind.__module__}.{kind.__qualname__}"


class AdminAPI:
    """
    What the admin API does, on the running pools, apart from HTTP.

    Each method finds what it is asked about, changes the pool through its
    public operations, logs the change with the client who asked, and
    returns the JSON to answer with; it raises an L{AdminError} saying what
    was wrong.

    @ivar pools: the runtime pools by name, in configuration order; the
        service's own mapping, so that pools a reload adds or removes are
        seen here at once.
    """

    _log = Logger()

    def __init__(
        self,
        pools: Mapping[str, Pool],
        new_server: Callable[[config.Server], ServerState],
        cache: ICachePurge | None = None,
    ) -> None:
        """
        @param new_server: turns a server's configuration into its runtime
            state, as the service does for the servers of the file.
        @param cache: what purges the HTTP cache, or L{None} when no route
            caches (then C{DELETE /cache} answers 404). One whose routes
            come and go with reloads raises L{NoCache} itself while none caches.
        """
        self.pools = pools
        self._new_server = new_server
        self._cache = cache
        # Removals asked for and not yet done, so that asking again does not
        # log the removal twice.
        self._removing: set[tuple[Pool, str]] = set()

    def pool(self, name: str) -> Pool:
        """
        Find a pool by name.

        @raise UnknownPool: when there is none of that name.
        """
        try:
            return self.pools[name]
        except KeyError:
            raise UnknownPool(name) from None

    def server(self, pool_name: str, address: str) -> tuple[Pool, ServerState]:
        """
        Find a server by its pool's name and its address.

        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        pool = self.pool(pool_name)
        try:
            return pool, pool.server(address)
        except NoSuchServer:
            raise UnknownServer(pool.name, address) from None

    def describe_pools(self) -> JSONObject:
        """
        The JSON of C{GET /pools}: every pool, in configuration order.
        """
        return {"pools": [describe_pool(pool) for pool in self.pools.values()]}

    def describe_pool(self, pool_name: str) -> JSONObject:
        """
        The JSON of C{GET /pools/<pool>}.

        @raise UnknownPool: when there is no such pool.
        """
        return describe_pool(self.pool(pool_name))

    def describe_server(self, pool_name: str, address: str) -> JSONObject:
        """
        The JSON of C{GET /pools/<pool>/servers/<address>}.

        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        return describe_server(self.server(pool_name, address)[1])

    def add_server(self, pool_name: str, document: object, client: str) -> JSONObject:
        """
        Add a server to a pool: it takes work at once and health checks start on it.

        @param document: the decoded JSON body; see L{server_from_json}.
        @param client: who asked, for the log.
        @return: the new server's JSON.
        @raise UnknownPool: when there is no such pool.
        @raise BadRequest: when C{document} is not a valid server.
        @raise ServerExists: when the pool has a server at that address.
        """
        pool = self.pool(pool_name)
        settings = server_from_json(document)
        server = self._new_server(settings)
        try:
            pool.add(server)
        except DuplicateServer as error:
            raise ServerExists(error.pool, error.address) from None
        self._changed(
            "add", pool, server, client, "admin: server {server} added to pool {pool} by {client}"
        )
        return describe_server(server)

    def remove_server(self, pool_name: str, address: str, client: str) -> JSONObject:
        """
        Drain a server, and take it out of its pool once its work in flight
        is done; the removal is logged when it happens.

        @param client: who asked, for the log.
        @return: the server's JSON, as it is now: draining, or already out
            if it was idle.
        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        pool, server = self.server(pool_name, address)
        key = (pool, server.address)
        if key not in self._removing:
            self._removing.add(key)
            removed = pool.remove(server.address)
            self._changed(
                "remove",
                pool,
                server,
                client,
                "admin: server {server} of pool {pool} draining, to be removed, by {client}",
            )
            # Fires at once for an idle server, logging after the line above.
            removed.addCallback(self._removed, pool, server, client)
        return describe_server(server)

    def _removed(self, _: None, pool: Pool, server: ServerState, client: str) -> None:
        self._removing.discard((pool, server.address))
        self._changed(
            "removed",
            pool,
            server,
            client,
            "admin: server {server} removed from pool {pool}, drained (asked by {client})",
        )

    def drain_server(self, pool_name: str, address: str, client: str) -> JSONObject:
        """
        Let a server finish its work in flight but give it nothing new, until enabled.

        @return: the server's JSON.
        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        pool, server = self.server(pool_name, address)
        pool.drain(server.address)
        return self._operated("drain", pool, server, client)

    def enable_server(self, pool_name: str, address: str, client: str) -> JSONObject:
        """
        Undo a drain or disable: the server is up if its health checks pass,
        else down until they do. A server being removed stays draining.

        @return: the server's JSON.
        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        pool, server = self.server(pool_name, address)
        pool.enable(server.address)
        return self._operated("enable", pool, server, client)

    def disable_server(self, pool_name: str, address: str, client: str) -> JSONObject:
        """
        Put a server in maintenance: nothing new, work in flight goes on, and
        health checks never bring it back; only enabling does.

        @return: the server's JSON.
        @raise UnknownPool: when there is no such pool.
        @raise UnknownServer: when the pool has no server at C{address}.
        """
        pool, server = self.server(pool_name, address)
        pool.disable(server.address)
        return self._operated("disable", pool, server, client)

    def _operated(self, action: str, pool: Pool, server: ServerState, client: str) -> JSONObject:
        self._changed(action, pool, server, client, _OPERATED[action])
        return describe_server(server)

    def purge_cache(self, query: Mapping[str, Sequence[str]], client: str) -> JSONObject:
        """
        Remove stored responses from the HTTP cache: C{url} names one absolute
        URL, C{prefix} every URL that starts with it.

        @param query: the decoded query string; exactly one of C{url} and
            C{prefix}, once.
        @param client: who asked, for the log.
        @return: C{{"removed": count}} and what was purged.
        @raise NoCache: when no cache was given.
        @raise BadRequest: for another query, or a value that is not an
            absolute C{http} or C{https} URL (the start of one for C{prefix}).
        """
        if self._cache is None:
            raise NoCache()
        unknown = sorted(set(query) - {"url", "prefix"})
        if unknown:
            raise BadRequest("unknown parameter; use url= or prefix=", field=unknown[0])
        given = [(name, values) for name, values in query.items() if values]
        if len(given) != 1 or len(given[0][1]) != 1:
            raise BadRequest("give exactly one url= or prefix=")
        [(name, [value])] = given
        scheme, host = _url_start(value)
        if scheme not in ("http", "https") or name == "url" and not host:
            raise BadRequest("must be an absolute http:// or https:// URL", field=name)
        try:
            if name == "url":
                removed = self._cache.purge_url(value)
            else:
                removed = self._cache.purge_prefix(value)
        except ValueError as error:
            raise BadRequest(str(error), field=name) from None
        except LookupError:
            raise NoCache() from None
        self._log.info(
            "admin: {removed} cached response(s) purged by {client}, {kind} {value}",
            action="purge",
            kind=name,
            value=value,
            removed=removed,
            client=client,
        )
        return {"removed": removed, name: value}

    def _changed(
        self, action: str, pool: Pool, server: ServerState, client: str, format: str
    ) -> None:
        """
        Log a change to a server with the same fields whatever the change.
        """
        self._log.info(
            format,
            action=action,
            pool=pool.name,
            server=server.address,
            client=client,
            status=server.status.value,
        )


def _url_start(value: str) -> tuple[str, str]:
    """
    The scheme (lower-case) and host of an absolute URL or the start of one;
    empty strings for what is not one.
    """
    if "://" not in value:
        return "", ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "", ""
    return parts.scheme.lower(), parts.netloc


@frozen
class _Answer:
    """
    What an endpoint answers when it succeeds.

    @ivar status: the HTTP status.
    @ivar document: the JSON body.
    @ivar location: the C{Location} of what a C{POST} made, or L{None}.
    """

    status: int
    document: JSONObject
    location: str | None = None


_Endpoint = Callable[[Request], _Answer]


class AdminResource(Resource):
    """
    The admin API over HTTP: checks the token, routes by method and path to
    L{AdminAPI}, and answers JSON, errors included.

    One leaf resource routes every path itself, so that every answer (404
    and 405 too) is JSON and the token is checked before anything else.

    @ivar api: what does the work.
    @ivar token: the bearer token requests must send in C{Authorization},
        or L{None} for none. A reload may change it in place.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, api: AdminAPI, token: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api
        self.token = token

    def render(self, request: Request) -> bytes:
        """
        Answer one request with JSON.
        """
        try:
            self._authorize(request)
            answer = self._endpoint(request)(request)
        except AdminError as error:
            return self._write(request, error.status, error.document(), error.headers())
        except Exception:
            # A bug of ours: log it whole, answer JSON without its details.
            self._log.failure(
                "admin: {method} {path} failed",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
            )
            return self._write(request, INTERNAL_SERVER_ERROR, {"error": "internal error"})
        headers = []
        if answer.location is not None:
            headers.append((b"location", answer.location.encode("utf-8")))
        return self._write(request, answer.status, answer.document, headers)

    def _authorize(self, request: Request) -> None:
        """
        Refuse a request without the token, then one from a web page.

        @raise Unauthorized: when a token is set and the request does not
            send it as C{Authorization: Bearer <token>}.
        @raise BrowserRefused: when the request has an C{Origin} header.
        """
        if self.token is not None:
            given = request.requestHeaders.getRawHeaders(b"authorization") or []
            if not given:
                raise Unauthorized(given=False)
            # RFC 7235 section 2.1: the scheme is case-insensitive.
            scheme, _, credentials = given[0].partition(b" ")
            expected = self.token.encode("utf-8")
            # compare_digest takes as long whatever the bytes, so that the
            # time of a refusal does not tell how much of a guess was right.
            matched = hmac.compare_digest(credentials.strip(b" "), expected)
            if len(given) != 1 or scheme.lower() != b"bearer" or not matched:
                raise Unauthorized(given=True)
        origin = request.getHeader(b"origin")
        if origin is not None:
            raise BrowserRefused(origin.decode("latin-1"))

    def _endpoint(self, request: Request) -> _Endpoint:
        """
        Find what answers a request, by its path and then its method.

        @raise UnknownPath: when no endpoint has the path.
        @raise MethodNotAllowed: when the endpoint does not take the method.
        """
        segments = [segment.decode("utf-8", "replace") for segment in request.postpath or []]
        if len(segments) > 1 and segments[-1] == "":
            segments.pop()  # one trailing slash is forgiven
        # An empty segment names nothing: no pool or server has an empty name.
        methods = {} if "" in segments else self._methods(segments)
        if not methods:
            raise UnknownPath(request.path.decode("utf-8", "replace"))
        method = request.method.decode("latin-1")
        endpoint = methods.get("GET" if method == "HEAD" else method)
        if endpoint is None:
            allowed = tuple(methods) + (("HEAD",) if "GET" in methods else ())
            raise MethodNotAllowed(method, allowed)
        return endpoint

    def _methods(self, segments: list[str]) -> dict[str, _Endpoint]:
        """
        The endpoints of one path, by method; empty for a path with none.
        """
        api = self.api
        match segments:
            case ["pools"]:
                return {"GET": lambda request: _Answer(OK, api.describe_pools())}
            case ["pools", pool]:
                return {"GET": lambda request: _Answer(OK, api.describe_pool(pool))}
            case ["pools", pool, "servers"]:
                return {"POST": lambda request: self._add(request, pool)}
            case ["pools", pool, "servers", address]:
                return {
                    "GET": lambda request: _Answer(OK, api.describe_server(pool, address)),
                    "DELETE": lambda request: _Answer(
                        ACCEPTED, api.remove_server(pool, address, _client(request))
                    ),
                }
            case ["pools", pool, "servers", address, "drain" | "enable" | "disable" as action]:
                operate = {
                    "drain": api.drain_server,
                    "enable": api.enable_server,
                    "disable": api.disable_server,
                }[action]
                return {
                    "POST": lambda request: _Answer(OK, operate(pool, address, _client(request)))
                }
            case ["cache"]:
                return {
                    "DELETE": lambda request: _Answer(
                        OK, api.purge_cache(_query(request), _client(request))
                    )
                }
        return {}

    def _add(self, request: Request, pool: str) -> _Answer:
        """
        Add the server the request's JSON body describes; answer 201 with
        where the new server is.
        """
        document = read_json(_body(request))
        added = self.api.add_server(pool, document, _client(request))
        address = cast(str, added["address"])
        location = "/pools/{}/servers/{}".format(*(_quoted(part) for part in (pool, address)))
        return _Answer(CREATED, added, location)

    def _write(
        self,
        request: Request,
        status: int,
        document: JSONObject,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> bytes:
        """
        Set the status and headers of a JSON answer and return its body,
        or nothing for C{HEAD}, whose length is still given.
        """
        body = json.dumps(document, indent=2).encode("utf-8") + b"\n"
        request.setResponseCode(status)
        response_headers = request.responseHeaders
        response_headers.setRawHeaders(b"content-type", [b"application/json"])
        # State changes from one moment to the next: no cache may keep it.
        response_headers.setRawHeaders(b"cache-control", [b"no-store"])
        response_headers.setRawHeaders(b"x-content-type-options", [b"nosniff"])
        response_headers.setRawHeaders(b"server", [b"txproxy"])  # not Twisted's version
        for name, value in headers:
            response_headers.setRawHeaders(name, [value])
        if request.method == b"HEAD":
            response_headers.setRawHeaders(b"content-length", [b"%d" % len(body)])
            return b""
        return body


def _client(request: HTTPRequest) -> str:
    """
    Who sent a request, for the log: the host of an IP address, else the
    address as Twisted shows it.
    """
    address: IAddress = request.getClientAddress()  # type: ignore[no-untyped-call]
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return str(address)


def _body(request: Request) -> bytes:
    """
    The request body, up to L{MAX_BODY} bytes.

    @raise BodyTooLarge: when it is longer.
    """
    # twisted.web has read the body into a file before rendering; its type
    # is not declared, and it is never None by then.
    content = cast(IO[bytes], request.content)
    content.seek(0)
    body = content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BodyTooLarge(MAX_BODY)
    return body


def _query(request: Request) -> dict[str, list[str]]:
    """
    The decoded query string of a request, each name with its values.
    """
    args = cast("dict[bytes, list[bytes]]", request.args)
    return {
        name.decode("utf-8", "replace"): [value.decode("utf-8", "replace") for value in values]
        for name, values in args.items()
    }


def _quoted(part: str) -> str:
    """
    One path segment of a C{Location}, percent-encoded.
    """
    return quote(part, safe=":[]")


class _AdminChannel(HTTPChannel):
    """
    An HTTP/1.1 connection to the admin API, known to its site while open so
    that L{AdminSite.close_connections} can close it.
    """

    factory: AdminSite

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self.factory.channels.add(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        self.factory._channel_closed(self)


class AdminSite(Site):
    """
    Serves the admin API: one L{AdminResource} over HTTP/1.1, with no access
    log (changes are logged by L{AdminAPI}, requests at debug level).

    It can close its connections, so that C{txproxy.listening.ListenerService} runs it
    as it runs a listener's factory.

    @ivar channels: the open connections.
    """

    protocol = _AdminChannel  # type: ignore[assignment]
    noisy = False
    _log = Logger()

    def __init__(self, api: AdminAPI, reactor: IReactorTime, token: str | None = None) -> None:
        """
        @param reactor: times idle connections out.
        @param token: the bearer token requests must send, or L{None}.
        """
        self.root = AdminResource(api, token)
        super().__init__(  # type: ignore[no-untyped-call]
            self.root, reactor=reactor, parsePOSTFormSubmission=False
        )
        self.channels: Connections[_AdminChannel] = Connections()

    @property
    def token(self) -> str | None:
        """
        The bearer token requests must send, or L{None}; setting it takes
        effect from the next request, as a reload that changes it in place
        needs.
        """
        return self.root.token

    @token.setter
    def token(self, token: str | None) -> None:
        self.root.token = token

    def acceptableProtocols(self) -> list[bytes]:
        """
        Offer only HTTP/1.1 in ALPN on a TLS endpoint: the channel speaks no HTTP/2.
        """
        return [b"http/1.1"]

    def log(self, request: HTTPRequest) -> None:
        """
        Log a request at debug level, instead of twisted.web's access log.
        """
        self._log.debug(
            "admin: {method} {path} {status} for {client}",
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1"),
            status=request.code,
            client=_client(request),
        )

    def _channel_closed(self, channel: _AdminChannel) -> None:
        self.channels.discard(channel)

    def close_connections(self) -> Deferred[None]:
        """
        Close every connection once what it has buffered is written.

        @return: fires once every connection is gone.
        """
        emptied = self.channels.emptied()
        for channel in list(self.channels):
            if channel.transport is not None:
                channel.transport.loseConnection()
        return emptied
