# -*- test-case-name: tests.test_config -*-
"""
The public configuration API: the classes a configuration file builds, and L{load}.

A configuration file is a Python module that defines C{proxy = Proxy(...)}.
Each class here is a frozen C{attrs} class that checks its arguments as it is
made. Outside L{load}, a bad value raises L{ConfigError} at once. While L{load}
runs a file, each bad value is recorded and the file goes on, so that a single
L{InvalidConfiguration} names every mistake with its line, as C{nginx -t} does;
until then a field may hold the bad value it was given.

Values are stored so that every object is immutable and hashable: lists become
tuples, mappings become tuples of C{(key, value)} pairs in the order given,
C{Route.methods} a frozenset, C{Access} rules parsed networks and
C{Route.rewrite} patterns compiled ones.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import os
import re
import traceback
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sized
from contextvars import ContextVar
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_network
from types import FrameType
from typing import TYPE_CHECKING, TypeGuard, TypeVar

from attrs import Attribute, define, evolve, field, fields, frozen
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
    serverFromString,
)
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface.interface import InterfaceClass

from txproxy.interfaces import IBalancer, IServiceFactory

if TYPE_CHECKING:
    from txproxy.http.events import RequestHead

__all__ = [
    "BALANCER_NAMES",
    "HTTP_LIMITS",
    "TCP_LIMITS",
    "Access",
    "AccessLog",
    "Admin",
    "Cache",
    "Certificate",
    "Compression",
    "ConfigError",
    "HTTPListener",
    "HealthCheck",
    "InvalidConfiguration",
    "Limits",
    "PassiveCheck",
    "Pool",
    "Proxy",
    "RateLimit",
    "Route",
    "Server",
    "TCPListener",
    "TLS",
    "UpstreamTLS",
    "load",
]

BALANCER_NAMES = frozenset({"round_robin", "least_connections", "ip_hash", "random"})
"""
The balancers a pool may name; any other balancer is given as an L{IBalancer} provider.
"""

_T = TypeVar("_T")
_Check = Callable[[object], str | None]

# RFC 9110 section 5.6.2: the characters of header names and methods.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_METHOD = r"[!#$%&'*+.^_`|~0-9A-Z-]+"
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@frozen
class ConfigError(Exception):
    """
    One mistake in a configuration, with where it was made.

    @ivar file: the file of the offending call.
    @ivar line: its line, or L{None} for a mistake of the whole file.
    @ivar call: the call, shortened, such as C{Server('10.0.0.1:99999')}; empty
        for a mistake of the whole file.
    @ivar field: the argument at fault, such as C{address} or C{servers[1]}.
    @ivar message: what is wrong with it.
    """

    file: str
    line: int | None
    call: str
    field: str
    message: str

    def __str__(self) -> str:
        """
        C{file:line: call: field: message}, leaving out the parts not known.
        """
        where = str(_Location(self.file, self.line))
        return ": ".join(part for part in (where, self.call, self.field, self.message) if part)


@frozen
class InvalidConfiguration(Exception):
    """
    Every mistake L{load} found in a configuration file.

    @ivar errors: the mistakes, in the order of their lines.
    """

    errors: tuple[ConfigError, ...]

    def __str__(self) -> str:
        """
        One mistake a line.
        """
        return "\n".join(str(error) for error in self.errors)


@frozen
class _Location:
    """
    Where a configuration object was made.
    """

    file: str
    line: int | None

    def __str__(self) -> str:
        """
        C{file:line}, or the file alone when the line is not known.
        """
        return self.file if self.line is None else f"{self.file}:{self.line}"


@define
class _Collector:
    """
    The mistakes found so far in the file that L{load} is running.

    @ivar file: the name the file's code was compiled with.
    """

    file: str
    errors: list[ConfigError] = field(factory=list)

    def fail(self, line: int | None, name: str, message: str) -> None:
        """
        Record a mistake of the file as a whole rather than of one call in it.
        """
        self.errors.append(ConfigError(self.file, line, "", name, message))


_collecting: ContextVar[_Collector | None] = ContextVar("_collecting", default=None)


def _is_machinery(frame: FrameType) -> bool:
    """
    Whether a frame runs this module or C{attrs}, rather than the caller's code.
    """
    module = str(frame.f_globals.get("__name__", ""))
    return (
        frame.f_globals is globals()
        or frame.f_code.co_filename.startswith("<attrs generated")
        or module.partition(".")[0] == "attr"
    )


def _caller_location() -> _Location:
    """
    Find the line that is making a configuration object.

    It is the innermost line of the file L{load} is running or, outside
    L{load}, the innermost line outside this module and C{attrs}.
    """
    collector = _collecting.get()
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if collector is None:
            found = not _is_machinery(frame)
        else:
            found = filename == collector.file
        if found:
            return _Location(filename, frame.f_lineno)
        frame = frame.f_back
    return _Location("<unknown>", None)


@frozen
class _Declared:
    """
    A configuration object, which remembers the line that made it.
    """

    _location: _Location = field(init=False, factory=_caller_location, eq=False, repr=False)


def _call(instance: _Declared) -> str:
    """
    Describe a configuration call by its class and its first argument, if a string.
    """
    first = getattr(instance, _arguments(type(instance))[0])
    shown = repr(first) if isinstance(first, str) else "..."
    return f"{type(instance).__name__}({shown})"


def _arguments(kind: type[_Declared]) -> list[str]:
    """
    The names of the arguments a configuration class takes, in order.
    """
    return [attribute.name for attribute in fields(kind) if attribute.init]


def _report(instance: _Declared, name: str, message: str) -> None:
    """
    Raise a L{ConfigError} about an argument or, while L{load} runs, record it.

    @param instance: the object whose argument is wrong.
    @param name: the argument, such as C{weight} or C{servers[1]}.
    @param message: what is wrong with it.
    """
    location = instance._location
    error = ConfigError(location.file, location.line, _call(instance), name, message)
    collector = _collecting.get()
    if collector is None:
        raise error
    collector.errors.append(error)


def _checked(
    *checks: _Check, each: _Check | None = None
) -> Callable[[_Declared, Attribute[_T], _T], None]:
    """
    Make an C{attrs} validator that reports the first of C{checks} a value fails.

    @param checks: each returns what is wrong with a value, or L{None}.
    @param each: if given, checks each item of a value that passed C{checks}
        and is a tuple or frozenset; a failing item is reported on its own,
        named by its index if the value is a tuple.
    """

    def validate(instance: _Declared, attribute: Attribute[_T], value: _T) -> None:
        if not _passes(instance, attribute.name, value, checks) or each is None:
            return
        if isinstance(value, tuple | frozenset):
            for index, item in enumerate(value):
                name = f"{attribute.name}[{index}]" if isinstance(value, tuple) else attribute.name
                _passes(instance, name, item, (each,))

    return validate


def _passes(instance: _Declared, name: str, value: object, checks: tuple[_Check, ...]) -> bool:
    """
    Report the first of C{checks} that C{value} fails, and say whether none did.
    """
    for check in checks:
        message = check(value)
        if message is not None:
            _report(instance, name, message)
            return False
    return True


def _shown(value: object) -> str:
    """
    Show a value in a message: a scalar by its repr, anything else by its type.
    """
    if value is None or isinstance(value, str | int | float):
        return repr(value)
    return type(value).__name__


def _is_number(value: object) -> TypeGuard[int | float]:
    """
    Whether a value is an int or a float, C{True} and C{False} not counted.
    """
    return isinstance(value, int | float) and not isinstance(value, bool)


def _instance_of(*kinds: type, name: str = "") -> _Check:
    """
    Check that a value is an instance of one of C{kinds}, called C{name} in messages.
    """
    name = name or " or ".join(
        ("an " if kind.__name__[0] in "AEIOUaeiou" else "a ") + kind.__name__ for kind in kinds
    )

    def check(value: object) -> str | None:
        return None if isinstance(value, kinds) else f"must be {name}, not {_shown(value)}"

    return check


def _provides(interface: InterfaceClass) -> _Check:
    """
    Check that a value provides a zope.interface interface.
    """

    def check(value: object) -> str | None:
        if interface.providedBy(value):
            return None
        return f"must provide {interface.__name__}, not {_shown(value)}"

    return check


def _optional(check: _Check) -> _Check:
    """
    Check a value with C{check} unless it is L{None}.
    """

    def check_unless_none(value: object) -> str | None:
        return None if value is None else check(value)

    return check_unless_none


def _required(message: str) -> _Check:
    """
    Check that a value is neither L{None} nor empty, or fail with C{message}.
    """

    def check(value: object) -> str | None:
        empty = isinstance(value, Sized) and len(value) == 0
        return message if value is None or empty else None

    return check


def _collection(value: object) -> str | None:
    """
    Check that a value is a tuple or frozenset, as a converter stores a list.
    """
    if isinstance(value, tuple | frozenset):
        return None
    return f"must be a list, not {_shown(value)}"


def _integer(low: int, high: int | None = None) -> _Check:
    """
    Check that a value is an integer from C{low} to C{high}, or at least C{low}.
    """

    def check(value: object) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be an integer, not {_shown(value)}"
        if high is None:
            return None if value >= low else f"must be at least {low}, not {value}"
        return None if low <= value <= high else f"must be {low}-{high}, not {value}"

    return check


def _number(low: float, high: float | None = None, *, above: bool = False) -> _Check:
    """
    Check that a value is a number from C{low} to C{high}, or at least C{low},
    or with C{above} greater than C{low}.
    """

    def check(value: object) -> str | None:
        if not _is_number(value):
            return f"must be a number, not {_shown(value)}"
        if above:
            return None if value > low else f"must be greater than {low}, not {value}"
        if high is None:
            return None if value >= low else f"must be at least {low}, not {value}"
        return None if low <= value <= high else f"must be from {low} to {high}, not {value}"

    return check


_positive = _number(0, above=True)


def _one_of(choices: Collection[str]) -> _Check:
    """
    Check that a value is one of the strings C{choices}.
    """
    listed = ", ".join(repr(choice) for choice in sorted(choices))

    def check(value: object) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"must be one of {listed}, not {_shown(value)}"

    return check


def _matching(pattern: str, description: str) -> _Check:
    """
    Check that a value is a string matching the regular expression C{pattern}.
    """
    compiled = re.compile(pattern)

    def check(value: object) -> str | None:
        if isinstance(value, str) and compiled.fullmatch(value):
            return None
        return f"must be {description}, not {_shown(value)}"

    return check


def _pair(key_check: _Check, value_check: _Check) -> _Check:
    """
    Check one C{(key, value)} pair of a mapping.
    """

    def check(pair: object) -> str | None:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            return f"must be a (key, value) pair, not {_shown(pair)}"
        key, value = pair
        key_message = key_check(key)
        if key_message is not None:
            return key_message
        value_message = value_check(value)
        return None if value_message is None else f"the value of {key!r} {value_message}"

    return check


_flag = _instance_of(bool)
_file_path = _matching(r".+", "a file path")
_url_path = _matching(r"/\S*", "a path starting with '/'")
_header_name = _matching(_TOKEN, "a header name")
_method = _matching(_METHOD, "an upper-case method such as 'GET'")


def _header_value(value: object) -> str | None:
    """
    Check a header value to send: a str without the characters that end a header.
    """
    if not isinstance(value, str):
        return f"must be a str, not {_shown(value)}"
    return f"must not contain CR, LF or NUL: {value!r}" if re.search("[\r\n\0]", value) else None


def _is_hostname(name: str) -> bool:
    """
    Whether a string is a host name or an IPv4 address: dot-separated labels.
    """
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _hostname(value: object) -> str | None:
    """
    Check that a value is a host name.
    """
    if isinstance(value, str) and _is_hostname(value):
        return None
    return f"must be a host name, not {_shown(value)}"


def _host_pattern(value: object) -> str | None:
    """
    Check that a value is a host name, or one after a leading C{*.} wildcard.
    """
    if isinstance(value, str) and _is_hostname(value.removeprefix("*.")):
        return None
    return f"must be a host name or a wildcard such as '*.example.com', not {_shown(value)}"


def _host_and_port(address: object) -> tuple[str, int]:
    """
    Split C{host:port}, without the brackets of an IPv6 host; C{0} for a port
    that is not a number.
    """
    if not isinstance(address, str):
        return "", 0
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, (int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else 0)


def _address(value: object) -> str | None:
    """
    Check a server address: C{host:port}, an IPv6 host in brackets.
    """
    if not isinstance(value, str):
        return f"must be a 'host:port' string, not {_shown(value)}"
    host, port = _host_and_port(value)
    if not (_is_ipv6(host) if value.startswith("[") else _is_hostname(host)):
        return f"must be 'host:port', as '10.0.0.1:80' or '[::1]:80', not {value!r}"
    return None if 1 <= port <= 65535 else "port must be 1-65535"


def _is_ipv6(host: str) -> bool:
    """
    Whether a string is an IPv6 address.
    """
    try:
        IPv6Address(host)
    except ValueError:
        return False
    return True


def _balancer(value: object) -> str | None:
    """
    Check that a value names a balancer or provides L{IBalancer}.
    """
    if isinstance(value, str) and value in BALANCER_NAMES or IBalancer.providedBy(value):
        return None
    names = ", ".join(repr(name) for name in sorted(BALANCER_NAMES))
    return f"must be one of {names} or an IBalancer provider, not {_shown(value)}"


def _certificate(value: object) -> str | None:
    """
    Check that a value is a L{Certificate} or the path of a PEM file.
    """
    if isinstance(value, Certificate) or isinstance(value, str) and value:
        return None
    return f"must be a file path or a Certificate, not {_shown(value)}"


def _status_range(value: object) -> str | None:
    """
    Check an inclusive C{(lowest, highest)} range of HTTP status codes.
    """
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(status, int) and 100 <= status <= 599 for status in value)
        and value[0] <= value[1]
    ):
        return None
    return "must be a (lowest, highest) pair of status codes from 100 to 599"


def _network(value: object) -> str | None:
    """
    Check an access rule, as parsed by L{_to_networks}.
    """
    if isinstance(value, IPv4Network | IPv6Network):
        return None
    if isinstance(value, str):  # not parsed by _to_networks: find out why
        try:
            ip_network(value, strict=False)
        except ValueError as error:
            return str(error)
    return f"must be an address or network such as '10.0.0.0/8', not {_shown(value)}"


def _rewrite(value: object) -> str | None:
    """
    Check a C{(pattern, replacement)} rewrite, as compiled by L{_to_rewrite}.
    """
    if not (isinstance(value, tuple) and len(value) == 2):
        return f"must be a (pattern, replacement) pair, not {_shown(value)}"
    pattern, replacement = value
    if isinstance(pattern, str):  # not compiled by _to_rewrite: find out why
        try:
            re.compile(pattern)
        except re.error as error:
            return f"bad regular expression {pattern!r}: {error}"
    if not (isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str)):
        return f"the pattern must be a str or a compiled str pattern, not {_shown(pattern)}"
    if not isinstance(replacement, str):
        return f"the replacement must be a str, not {_shown(replacement)}"
    try:
        pattern.sub(replacement, "")  # parses the replacement's group references
    except (re.error, IndexError) as error:
        return f"bad replacement {replacement!r}: {error}"
    return None


def _build_endpoint(description: object) -> IStreamServerEndpoint | str:
    """
    Build, without listening, the endpoint a description names, with Twisted's
    own parser; or say why it cannot be built.
    """
    if not isinstance(description, str):
        return f"must be an endpoint string such as 'tcp:8080', not {_shown(description)}"
    try:
        # No reactor: the parsers only build the endpoint object.
        endpoint: IStreamServerEndpoint = serverFromString(None, description)  # type: ignore[no-untyped-call]
    except Exception as error:  # each parser fails in its own way
        return f"not a valid endpoint: {error}"
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        if not 0 <= endpoint._port <= 65535:
            return "port must be 0-65535"
    return endpoint


def _endpoint(value: object) -> str | None:
    """
    Check an endpoint description: see L{_build_endpoint}.
    """
    built = _build_endpoint(value)
    return built if isinstance(built, str) else None


def _listening_key(description: object) -> tuple[object, ...] | None:
    """
    What two endpoints share when they would listen in the same place, or
    L{None} when an endpoint is invalid or lets the system pick its port.
    """
    endpoint = _build_endpoint(description)
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        if endpoint._port == 0:
            return None
        return (type(endpoint).__name__, endpoint._port, endpoint._interface)
    if isinstance(endpoint, UNIXServerEndpoint):
        return ("unix", endpoint._address)
    return None if isinstance(endpoint, str) else ("other", description)


def _to_tuple(value: object) -> object:
    """
    Store a list or other iterable as a tuple; leave a string, a number or
    L{None} as it is, for the validator to judge.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _to_pairs(value: object) -> object:
    """
    Store a mapping as a tuple of its C{(key, value)} pairs, in order, and
    L{None} as no pairs.
    """
    if value is None:
        return ()
    return tuple(value.items()) if isinstance(value, Mapping) else _to_tuple(value)


def _to_frozenset(value: object) -> object:
    """
    Store an iterable as a frozenset; leave anything else for the validator.
    """
    items = _to_tuple(value)
    try:
        return frozenset(items) if isinstance(items, tuple) else items
    except TypeError:  # an unhashable item: the validator reports it
        return items


def _to_networks(value: object) -> object:
    """
    Parse each address or network of an access rule list.
    """
    items = _to_tuple(value)
    if not isinstance(items, tuple):
        return items
    return tuple(_parsed_network(item) for item in items)


def _parsed_network(value: object) -> object:
    """
    Parse one address or network; leave what does not parse for the validator.
    """
    if not isinstance(value, str):
        return value
    try:
        return ip_network(value, strict=False)
    except ValueError:
        return value


def _to_rewrite(value: object) -> object:
    """
    Compile the pattern of a C{(pattern, replacement)} pair, if it compiles.
    """
    rewrite = _to_tuple(value)
    if isinstance(rewrite, tuple) and len(rewrite) == 2 and isinstance(rewrite[0], str):
        try:
            return (re.compile(rewrite[0]), rewrite[1])
        except re.error:
            pass
    return rewrite


def _lower(value: object) -> object:
    """
    Store a string in lower case; leave anything else for the validator.
    """
    return value.lower() if isinstance(value, str) else value


def _instances(values: object, kind: type[_T]) -> Iterator[_T]:
    """
    The items of a tuple that are instances of C{kind}: cross-checks skip
    values already reported as wrong.
    """
    if isinstance(values, tuple):
        yield from (value for value in values if isinstance(value, kind))


@frozen
class Certificate(_Declared):
    """
    A certificate and its private key, in PEM files.

    @ivar cert: the certificate's file, which also holds the key when C{key} is L{None}.
    @ivar key: the private key's file, or L{None}.
    @ivar chain: the file of the intermediate certificates, or L{None}.
    """

    cert: str = field(validator=_checked(_file_path))
    key: str | None = field(default=None, validator=_checked(_optional(_file_path)))
    chain: str | None = field(default=None, validator=_checked(_optional(_file_path)))


@frozen
class UpstreamTLS(_Declared):
    """
    How txproxy speaks TLS to a server.

    @ivar ca: the file of the certificate authorities to trust, or L{None} for
        the system's.
    @ivar server_name: the name sent by SNI and verified, or L{None} for the
        server's host.
    @ivar client_certificate: what txproxy presents to the server: a
        L{Certificate}, a PEM file holding certificate and key, or L{None}.
    @ivar verify: whether the server's certificate is verified.
    """

    ca: str | None = field(default=None, validator=_checked(_optional(_file_path)))
    server_name: str | None = field(default=None, validator=_checked(_optional(_hostname)))
    client_certificate: Certificate | str | None = field(
        default=None, validator=_checked(_optional(_certificate))
    )
    verify: bool = field(default=True, validator=_checked(_flag))


@frozen
class Server(_Declared):
    """
    One backend server of a pool.

    @ivar address: C{host:port}; an IPv6 host is written in brackets, as C{[::1]:80}.
    @ivar weight: its share of the work against the pool's other servers.
    @ivar backup: whether it only takes work while no other server is available.
    @ivar max_connections: the most connections it may have at once, or L{None}.
    @ivar tls: how to speak TLS to it, or L{None} to speak plain TCP.
    """

    address: str = field(validator=_checked(_address))
    weight: int = field(default=1, validator=_checked(_integer(1)))
    backup: bool = field(default=False, validator=_checked(_flag))
    max_connections: int | None = field(default=None, validator=_checked(_optional(_integer(1))))
    tls: UpstreamTLS | None = field(
        default=None, validator=_checked(_optional(_instance_of(UpstreamTLS)))
    )

    @property
    def host(self) -> str:
        """
        The host part of the address, without the brackets of an IPv6 address.
        """
        return _host_and_port(self.address)[0]

    @property
    def port(self) -> int:
        """
        The port part of the address; C{0} in an address L{load} found invalid.
        """
        return _host_and_port(self.address)[1]


@frozen
class HealthCheck(_Declared):
    """
    How a pool probes its servers: an HTTP request, or without a path a TCP connect.

    A server goes down after C{fall} failed probes in a row and comes back up
    after C{rise} passed ones.

    @ivar path: the path to request, or L{None} to only connect.
    @ivar interval: seconds between probes of one server.
    @ivar timeout: seconds a probe may take.
    @ivar rise: passed probes that bring a server up.
    @ivar fall: failed probes that take a server down.
    @ivar method: the request method.
    @ivar host: the C{Host} header, or L{None} for the server's address.
    @ivar expect_status: the lowest and highest status that pass, inclusive.
    @ivar body: text the response body must contain, or L{None}.
    @ivar jitter: the fraction of C{interval} by which probes are spread at random.
    """

    path: str | None = field(default=None, validator=_checked(_optional(_url_path)))
    interval: float = field(default=2.0, validator=_checked(_positive))
    timeout: float = field(default=1.0, validator=_checked(_positive))
    rise: int = field(default=2, validator=_checked(_integer(1)))
    fall: int = field(default=3, validator=_checked(_integer(1)))
    method: str = field(default="GET", validator=_checked(_method))
    host: str | None = field(default=None, validator=_checked(_optional(_header_value)))
    expect_status: tuple[int, int] = field(
        default=(200, 399), converter=_to_tuple, validator=_checked(_status_range)
    )
    body: str | None = field(default=None, validator=_checked(_optional(_instance_of(str))))
    jitter: float = field(default=0.1, validator=_checked(_number(0, 1)))


@frozen
class PassiveCheck(_Declared):
    """
    How a pool takes servers out on the evidence of real traffic: passive
    health checking, as Envoy's outlier detection does.

    A server that fails C{consecutive_failures} connections or requests in a
    row is ejected: it takes no new work for C{base_ejection} seconds, twice
    as long at each ejection that follows, up to C{max_ejection}. It comes
    back when that time is over, or sooner when the pool's active check
    passes it C{rise} times in a row. Passive checks never eject more than
    C{max_ejection_percent} of the pool, nor its last server that is up.

    @ivar consecutive_failures: the failures in a row that eject a server: a
        connect failure, a reset, a timeout, or with C{on_5xx} a 5xx response.
    @ivar base_ejection: the seconds of a first ejection.
    @ivar max_ejection: the seconds of the longest ejection; a server that
        stayed in this long after an ejection starts again from C{base_ejection}.
    @ivar max_ejection_percent: the most servers of the pool, in percent, that
        may be ejected at once.
    @ivar on_5xx: whether a response with a 5xx status counts as a failure.
    """

    consecutive_failures: int = field(default=5, validator=_checked(_integer(1)))
    base_ejection: float = field(default=30.0, validator=_checked(_positive))
    max_ejection: float = field(default=300.0, validator=_checked(_positive))
    max_ejection_percent: int = field(default=50, validator=_checked(_integer(0, 100)))
    on_5xx: bool = field(default=False, validator=_checked(_flag))

    @max_ejection.validator
    def _not_below_base(self, attribute: Attribute[object], value: object) -> None:
        """
        Report a longest ejection shorter than the first.
        """
        base = self.base_ejection
        if _is_number(value) and _is_number(base) and base > 0 and value < base:
            _report(self, attribute.name, f"must be at least base_ejection ({base}), not {value}")


@frozen
class Pool(_Declared):
    """
    A named group of servers with one balancer and one health check.

    @ivar name: the pool's name, unique in a configuration.
    @ivar servers: its servers, at least one, each address at most once.
    @ivar balancer: one of L{BALANCER_NAMES} or an L{IBalancer} provider.
    @ivar health: its active health check, or L{None} for none.
    @ivar retries: how many more servers to try when connecting to one fails.
    @ivar queue_size: how many requests may wait for a server, when none is
        available, before txproxy answers 503.
    @ivar queue_timeout: seconds a request may wait there.
    @ivar keepalive: how many idle HTTP connections to keep open per server
        for reuse (nginx's C{keepalive}); those past it close after a second
        unused, so that a burst does not close connections it is about to
        reuse; 0 closes each after its response.
    @ivar keepalive_timeout: seconds an idle connection is kept. Keep it
        below the servers' own keep-alive timeout (5 s for Node.js, uvicorn
        and Apache), so that txproxy, not the server, closes idle connections.
    @ivar passive: its passive health check, or L{None} for none.
    @ivar slow_start: the seconds over which a server that comes up, or is
        added, ramps up from a tenth of its weight to all of it; 0 for none.
    """

    name: str = field(
        validator=_checked(_matching(r"[A-Za-z0-9_.-]+", "letters, digits, '_', '.' and '-'"))
    )
    servers: tuple[Server, ...] = field(
        converter=_to_tuple,
        validator=_checked(
            _required("a pool needs at least one server"),
            _collection,
            each=_instance_of(Server),
        ),
    )
    balancer: str | IBalancer = field(default="round_robin", validator=_checked(_balancer))
    health: HealthCheck | None = field(
        default=None, validator=_checked(_optional(_instance_of(HealthCheck)))
    )
    retries: int = field(default=3, validator=_checked(_integer(0)))
    queue_size: int = field(default=0, validator=_checked(_integer(0)))
    queue_timeout: float = field(default=10.0, validator=_checked(_positive))
    keepalive: int = field(default=32, validator=_checked(_integer(0)))
    keepalive_timeout: float = field(default=4.0, validator=_checked(_positive))
    passive: PassiveCheck | None = field(
        factory=PassiveCheck, validator=_checked(_optional(_instance_of(PassiveCheck)))
    )
    slow_start: float = field(default=0.0, validator=_checked(_number(0)))

    @servers.validator
    def _distinct_addresses(self, attribute: Attribute[object], servers: object) -> None:
        """
        Report each server whose address another server of the pool has.
        """
        first: dict[str, int] = {}
        for index, server in enumerate(servers if isinstance(servers, tuple) else ()):
            if isinstance(server, Server) and isinstance(server.address, str):
                seen = first.setdefault(server.address, index)
                if seen != index:
                    message = f"duplicate address {server.address!r} (also servers[{seen}])"
                    _report(self, f"servers[{index}]", message)


@frozen
class Limits(_Declared):
    """
    Size and time limits on a listener or route; L{None} inherits.

    A route's limits inherit from its listener's, and a listener's from
    L{HTTP_LIMITS} or L{TCP_LIMITS}: see L{Limits.over}.

    @ivar max_body: the most bytes of a request body; C{0} for no limit.
    @ivar max_header_size: the most bytes of a request head; C{0} for no limit.
    @ivar max_headers: the most header fields in a request head.
    @ivar client_header_timeout: seconds a client may take to send a request head
        (on a TCP listener with SNI routes: its whole TLS ClientHello).
    @ivar client_idle_timeout: seconds a client connection may stay idle.
    @ivar upstream_connect_timeout: seconds connecting to a server may take.
    @ivar upstream_response_timeout: seconds a server may take to start its response.
    """

    max_body: int | None = field(default=None, validator=_checked(_optional(_integer(0))))
    max_header_size: int | None = field(default=None, validator=_checked(_optional(_integer(0))))
    max_headers: int | None = field(default=None, validator=_checked(_optional(_integer(1))))
    client_header_timeout: float | None = field(
        default=None, validator=_checked(_optional(_positive))
    )
    client_idle_timeout: float | None = field(
        default=None, validator=_checked(_optional(_positive))
    )
    upstream_connect_timeout: float | None = field(
        default=None, validator=_checked(_optional(_positive))
    )
    upstream_response_timeout: float | None = field(
        default=None, validator=_checked(_optional(_positive))
    )

    def over(self, base: Limits) -> Limits:
        """
        Fill each limit left at L{None} from C{base}.

        @return: C{route_limits.over(listener_limits.over(HTTP_LIMITS))} is what
            applies to a route.
        """
        inherited = {
            name: getattr(base, name) for name in _arguments(Limits) if getattr(self, name) is None
        }
        return evolve(self, **inherited)


HTTP_LIMITS = Limits(
    max_body=0,
    max_header_size=16384,
    max_headers=100,
    client_header_timeout=60.0,
    client_idle_timeout=75.0,
    upstream_connect_timeout=5.0,
    upstream_response_timeout=60.0,
)
"""
The limits of an HTTP listener that sets none.
"""

TCP_LIMITS = Limits(client_idle_timeout=600.0, upstream_connect_timeout=5.0).over(HTTP_LIMITS)
"""
The limits of a TCP listener that sets none: as L{HTTP_LIMITS}, but idle
connections are kept for ten minutes.
"""


def _key_function(value: object) -> str | None:
    """
    Check a cache key function: one that takes the URL and the request head.
    """
    if not callable(value):
        return f"must be a function of (url, head), not {_shown(value)}"
    try:
        inspect.signature(value).bind("url", "head")
    except TypeError:
        return "must take two arguments, the URL and the request head"
    except ValueError:
        pass  # A callable without a signature to check, such as some builtins.
    return None


@frozen
class Cache(_Declared):
    """
    Caching of a route's responses in memory, as their C{Cache-Control} allows.

    The cache is shared, as RFC 9111 says of a proxy's: C{s-maxage} counts,
    C{private} responses are not kept, and a response is served only to
    requests whose C{Vary} fields match the one that got it.

    @ivar max_size: the most bytes the cache holds: bodies, header fields
        and a small overhead per response. The least recently used responses
        are dropped to make room.
    @ivar max_object_size: the most bytes of one response it keeps; a
        larger response is passed on and not kept.
    @ivar default_ttl: the most seconds of freshness given to a response
        that sets no lifetime (no C{max-age}, C{s-maxage} or C{Expires}) and
        whose status RFC 9111 section 4.2.2 lets a cache guess one for, such
        as 200, 301 or 404: a tenth of the time since its C{Last-Modified},
        up to C{default_ttl}, or C{default_ttl} when it has none; C{0} for
        no such guesses.
    @ivar stale_if_error: seconds past its lifetime a response may still be
        served while the servers fail, unless the response says otherwise
        (C{stale-if-error}, C{must-revalidate}, C{s-maxage}...).
    @ivar stale_while_revalidate: seconds past its lifetime a response may
        still be served, while txproxy revalidates it in the background,
        unless the response says otherwise (C{stale-while-revalidate},
        C{must-revalidate}, C{s-maxage}...).
    @ivar collapse_timeout: seconds a request for a response being fetched
        waits for that fetch rather than going to a server itself; C{0} for
        no waiting.
    @ivar key: a function of the request's URL (a C{str} such as
        C{"https://example.com/a?b=1"}, scheme and host in lower case) and
        its C{txproxy.http.events.RequestHead}, returning the C{str} key its
        responses are stored under, or L{None} for the URL itself. For
        example, C{lambda url, head: url.partition("?")[0]} ignores query
        strings. Purging by URL still finds responses stored under any key.
    """

    max_size: int = field(default=64 * 1024 * 1024, validator=_checked(_integer(1)))
    max_object_size: int = field(default=8 * 1024 * 1024, validator=_checked(_integer(1)))
    default_ttl: float = field(default=0.0, validator=_checked(_number(0)))
    stale_if_error: float = field(default=0.0, validator=_checked(_number(0)))
    stale_while_revalidate: float = field(default=0.0, validator=_checked(_number(0)))
    collapse_timeout: float = field(default=5.0, validator=_checked(_number(0)))
    key: Callable[[str, RequestHead], str] | None = field(
        default=None, validator=_checked(_optional(_key_function))
    )

    @max_object_size.validator
    def _fits(self, attribute: Attribute[object], value: object) -> None:
        """
        Report an object size limit larger than the whole cache.
        """
        if isinstance(value, int) and isinstance(self.max_size, int) and value > self.max_size:
            _report(
                self, attribute.name, f"must be at most max_size ({self.max_size}), not {value}"
            )


_known_algorithm = _one_of({"br", "gzip", "zstd"})


def _algorithm(value: object) -> str | None:
    """
    Check a compression algorithm: a known one, whose package is installed.
    """
    message = _known_algorithm(value)
    if message is None and value == "zstd" and importlib.util.find_spec("zstandard") is None:
        message = "needs the zstandard package: pip install 'txproxy[zstd]'"
    return message


@frozen
class Compression(_Declared):
    """
    Compression of a route's responses, for clients that accept it.

    @ivar types: the media types to compress, such as C{"application/json"};
        C{"text/*"} names every text type.
    @ivar min_length: the fewest bytes worth compressing.
    @ivar level: from 1, fastest, to 9, smallest.
    @ivar algorithms: the codings offered, in the order txproxy prefers them:
        C{"br"}, C{"gzip"}, and C{"zstd"} when the C{zstandard} package is
        installed (C{pip install 'txproxy[zstd]'}).
    """

    types: tuple[str, ...] = field(
        default=(
            "text/html",
            "text/css",
            "text/plain",
            "application/json",
            "application/javascript",
            "image/svg+xml",
        ),
        converter=_to_tuple,
        validator=_checked(
            _collection, each=_matching(f"{_TOKEN}/{_TOKEN}", "a media type such as 'text/html'")
        ),
    )
    min_length: int = field(default=1024, validator=_checked(_integer(0)))
    level: int = field(default=6, validator=_checked(_integer(1, 9)))
    algorithms: tuple[str, ...] = field(
        default=("br", "gzip"),
        converter=_to_tuple,
        validator=_checked(
            _required("compression needs at least one algorithm"),
            _collection,
            each=_algorithm,
        ),
    )


@frozen
class RateLimit(_Declared):
    """
    A token bucket per client, or per value of a request header.

    @ivar rate: requests a second, on average.
    @ivar burst: requests allowed at once, or L{None} for C{rate}.
    @ivar key: C{"client"} for the client's address, or C{"header:NAME"} for
        the value of the request header C{NAME}.
    """

    rate: float = field(validator=_checked(_positive))
    burst: int | None = field(default=None, validator=_checked(_optional(_integer(1))))
    key: str = field(
        default="client",
        validator=_checked(_matching(f"client|header:{_TOKEN}", "'client' or 'header:<name>'")),
    )


@frozen
class Access(_Declared):
    """
    Which client addresses a route serves; the others get 403.

    A client in C{deny} is refused; otherwise, if C{allow} is not empty, only a
    client in C{allow} is served.

    @ivar allow: networks, given as C{"10.0.0.0/8"} or single addresses.
    @ivar deny: networks, as C{allow}.
    """

    allow: tuple[IPv4Network | IPv6Network, ...] = field(
        default=(), converter=_to_networks, validator=_checked(_collection, each=_network)
    )
    deny: tuple[IPv4Network | IPv6Network, ...] = field(
        default=(), converter=_to_networks, validator=_checked(_collection, each=_network)
    )


_header_pairs = _checked(_collection, each=_pair(_header_name, _header_value))
_header_names = _checked(_collection, each=_header_name)


@frozen
class Route(_Declared):
    """
    An HTTP rule: the requests it matches, the pool they go to, and its policy.

    A listener tries its routes in order, and the first that matches wins.

    @ivar pool: the pool the matched requests go to.
    @ivar host: the host to match, exactly or as C{*.example.com}, stored in
        lower case; L{None} for any host.
    @ivar path: the path prefix to match.
    @ivar headers: C{(name, value)} pairs that must all match: a str value
        exactly, a compiled pattern by C{search}.
    @ivar methods: the methods to match, or L{None} for any.
    @ivar strip_prefix: whether C{path} is removed from the forwarded path.
    @ivar rewrite: a C{(pattern, replacement)} pair applied to the forwarded
        path with C{re.sub}, or L{None}.
    @ivar set_request_headers: C{(name, value)} pairs set on forwarded requests.
    @ivar remove_request_headers: names removed from forwarded requests.
    @ivar set_response_headers: C{(name, value)} pairs set on responses.
    @ivar remove_response_headers: names removed from responses.
    @ivar keep_server_headers: whether the server's C{Server} header is kept.
    @ivar cache: how responses are cached, or L{None} for not at all.
    @ivar compression: how responses are compressed, or L{None} for not at all.
    @ivar access: which clients are served, or L{None} for all.
    @ivar rate_limit: how fast clients may send requests, or L{None} for no limit.
    @ivar limits: limits over the listener's, or L{None} for the listener's.
    """

    pool: Pool = field(validator=_checked(_required("a route needs a pool"), _instance_of(Pool)))
    host: str | None = field(
        default=None, converter=_lower, validator=_checked(_optional(_host_pattern))
    )
    path: str = field(default="/", validator=_checked(_url_path))
    headers: tuple[tuple[str, str | re.Pattern[str]], ...] = field(
        default=(),
        converter=_to_pairs,
        validator=_checked(
            _collection,
            each=_pair(
                _header_name,
                _instance_of(str, re.Pattern, name="a str or a compiled regular expression"),
            ),
        ),
    )
    methods: frozenset[str] | None = field(
        default=None,
        converter=_to_frozenset,
        validator=_checked(
            _optional(_collection),
            _optional(_required("a route needs at least one method, or None for any")),
            each=_method,
        ),
    )
    strip_prefix: bool = field(default=False, validator=_checked(_flag))
    rewrite: tuple[re.Pattern[str], str] | None = field(
        default=None, converter=_to_rewrite, validator=_checked(_optional(_rewrite))
    )
    set_request_headers: tuple[tuple[str, str], ...] = field(
        default=(), converter=_to_pairs, validator=_header_pairs
    )
    remove_request_headers: tuple[str, ...] = field(
        default=(), converter=_to_tuple, validator=_header_names
    )
    set_response_headers: tuple[tuple[str, str], ...] = field(
        default=(), converter=_to_pairs, validator=_header_pairs
    )
    remove_response_headers: tuple[str, ...] = field(
        default=(), converter=_to_tuple, validator=_header_names
    )
    keep_server_headers: bool = field(default=False, validator=_checked(_flag))
    cache: Cache | None = field(default=None, validator=_checked(_optional(_instance_of(Cache))))
    compression: Compression | None = field(
        default=None, validator=_checked(_optional(_instance_of(Compression)))
    )
    access: Access | None = field(default=None, validator=_checked(_optional(_instance_of(Access))))
    rate_limit: RateLimit | None = field(
        default=None, validator=_checked(_optional(_instance_of(RateLimit)))
    )
    limits: Limits | None = field(default=None, validator=_checked(_optional(_instance_of(Limits))))


@frozen
class TLS(_Declared):
    """
    TLS on a listener: its certificates, chosen by SNI, and what it asks of clients.

    The files are not read here, but when the listener starts.

    @ivar certificates: at least one L{Certificate}, or PEM file holding a
        certificate and its key; the first serves clients that send no
        matching name.
    @ivar client_ca: the file of the authorities client certificates must
        come from, or L{None}.
    @ivar verify_client: C{"none"}, C{"optional"} or C{"required"}; the last
        two need C{client_ca}.
    @ivar min_version: C{"TLSv1.2"} or C{"TLSv1.3"}.
    @ivar ciphers: an OpenSSL cipher list, or L{None} for txproxy's.
    @ivar hsts: the C{max-age} of a C{Strict-Transport-Security} header added
        to responses, or L{None} for none.
    @ivar client_certificate_headers: whether an HTTP listener tells servers
        of a verified client certificate in C{X-Client-Cert-Subject} and
        C{X-Client-Cert-Fingerprint}; those sent by clients are always removed.
    """

    certificates: tuple[Certificate | str, ...] = field(
        converter=_to_tuple,
        validator=_checked(
            _required("TLS needs at least one certificate"), _collection, each=_certificate
        ),
    )
    client_ca: str | None = field(default=None, validator=_checked(_optional(_file_path)))
    verify_client: str = field(
        default="none", validator=_checked(_one_of({"none", "optional", "required"}))
    )
    min_version: str = field(default="TLSv1.2", validator=_checked(_one_of({"TLSv1.2", "TLSv1.3"})))
    ciphers: str | None = field(
        default=None, validator=_checked(_optional(_matching(r"\S+", "an OpenSSL cipher list")))
    )
    hsts: int | None = field(default=None, validator=_checked(_optional(_integer(0))))
    client_certificate_headers: bool = field(default=True, validator=_checked(_flag))

    @verify_client.validator
    def _needs_client_ca(self, attribute: Attribute[object], value: object) -> None:
        """
        Report client verification without the authorities to verify with.
        """
        if value in ("optional", "required") and self.client_ca is None:
            _report(self, "client_ca", f"needed when verify_client is {value!r}")


@frozen
class AccessLog(_Declared):
    """
    Where and how an HTTP listener logs each request.

    @ivar path: the file lines are appended to, or L{None} for the twistd log.
    @ivar format: C{combined} (nginx's and Apache's, plus upstream and time)
        or C{json} (one object a line).
    """

    path: str | None = field(default=None, validator=_checked(_optional(_file_path)))
    format: str = field(default="combined", validator=_checked(_one_of(("combined", "json"))))


def _to_access_log(value: object) -> object:
    """
    A path given alone stands for the combined format in that file.
    """
    return AccessLog(path=value) if isinstance(value, str) else value


@frozen
class _Listener(_Declared):
    """
    An endpoint and the pools it sends connections to.
    """

    endpoint: str = field(validator=_checked(_endpoint))

    def _pools(self) -> Iterator[Pool]:
        """
        The pools it uses, in order, each as often as it is used.
        """
        raise NotImplementedError()


@frozen
class HTTPListener(_Listener):
    """
    An endpoint that speaks HTTP, and the routes of its requests.

    @ivar endpoint: a Twisted endpoint string, such as C{"tcp:8080"}.
    @ivar routes: the routes, tried in order; a request none matches gets 404.
    @ivar tls: the TLS it terminates, or L{None} for plain HTTP.
    @ivar limits: its limits, over L{HTTP_LIMITS}.
    @ivar access_log: its L{AccessLog} (a path given alone means the
        combined format in that file), or L{None} for none.
    @ivar http2: whether a TLS listener offers HTTP/2 by ALPN.
    @ivar h2c: whether a plain listener also takes HTTP/2 from clients that
        start with its connection preface ("prior knowledge").
    @ivar http_to_https: the port every request is redirected to over
        HTTPS, or L{None}; a plain listener that redirects needs no routes.
    """

    routes: tuple[Route, ...] = field(
        default=(), converter=_to_tuple, validator=_checked(_collection, each=_instance_of(Route))
    )
    tls: TLS | None = field(default=None, validator=_checked(_optional(_instance_of(TLS))))
    limits: Limits = field(factory=Limits, validator=_checked(_instance_of(Limits)))
    access_log: AccessLog | None = field(
        default=None,
        converter=_to_access_log,
        validator=_checked(_optional(_instance_of(AccessLog))),
    )
    http2: bool = field(default=True, validator=_checked(_flag))
    h2c: bool = field(default=False, validator=_checked(_flag))
    http_to_https: int | None = field(
        default=None, validator=_checked(_optional(_integer(1, 65535)))
    )

    @http_to_https.validator
    def _plain_only(self, attribute: Attribute[object], value: object) -> None:
        """
        Report a redirect to HTTPS on a listener that is already HTTPS.
        """
        if value is not None and self.tls is not None:
            _report(self, "http_to_https", "only a plain listener redirects to HTTPS")

    def _pools(self) -> Iterator[Pool]:
        """
        The pool of each route, in order.
        """
        for route in _instances(self.routes, Route):
            if isinstance(route.pool, Pool):
                yield route.pool


def _to_sni_routes(value: object) -> object:
    """
    Store SNI routes as C{(host pattern, pool)} pairs, the patterns in lower case.
    """
    pairs = _to_pairs(value)
    if not isinstance(pairs, tuple):
        return pairs
    return tuple(
        (_lower(pair[0]), pair[1]) if isinstance(pair, tuple) and len(pair) == 2 else pair
        for pair in pairs
    )


@frozen
class TCPListener(_Listener):
    """
    An endpoint whose connections are relayed, byte for byte, to a pool.

    @ivar endpoint: a Twisted endpoint string, such as C{"tcp:15432"}.
    @ivar pool: the pool of connections no SNI route takes, or L{None}.
    @ivar tls: the TLS it terminates, or L{None} to relay TLS untouched.
    @ivar sni_routes: C{(host pattern, pool)} pairs, given as a mapping, that
        send a connection by the name in its TLS ClientHello, exactly or as
        C{*.example.com} (any name below it, as nginx's C{server_name}); an
        exact name wins, then the longest wildcard. A connection no route
        takes goes to C{pool}, or is closed when C{pool} is L{None}.
    @ivar limits: its limits, over L{TCP_LIMITS}.
    """

    pool: Pool | None = field(default=None, validator=_checked(_optional(_instance_of(Pool))))
    tls: TLS | None = field(default=None, validator=_checked(_optional(_instance_of(TLS))))
    sni_routes: tuple[tuple[str, Pool], ...] = field(
        default=(),
        converter=_to_sni_routes,
        validator=_checked(_collection, each=_pair(_host_pattern, _instance_of(Pool))),
    )
    limits: Limits = field(factory=Limits, validator=_checked(_instance_of(Limits)))

    @sni_routes.validator
    def _needs_pool(self, attribute: Attribute[object], value: object) -> None:
        """
        Report a listener with neither a pool nor SNI routes to send connections to.
        """
        if self.pool is None and value == ():
            _report(self, "pool", "a TCP listener needs a pool or sni_routes")
        if value != () and self.tls is not None:
            _report(
                self,
                "sni_routes",
                "SNI routes pass TLS through untouched; a listener with tls= terminates it",
            )

    def _pools(self) -> Iterator[Pool]:
        """
        The pool, then the pool of each SNI route, in order.
        """
        if isinstance(self.pool, Pool):
            yield self.pool
        for pair in _instances(self.sni_routes, tuple):
            if len(pair) == 2 and isinstance(pair[1], Pool):
                yield pair[1]


@frozen
class Admin(_Declared):
    """
    The endpoint of txproxy's metrics, stats page and admin API.

    @ivar endpoint: a Twisted endpoint string; by default port 9000 on the
        loopback interface only.
    @ivar token: the bearer token the admin API requires, or L{None} for none.
    """

    endpoint: str = field(default="tcp:9000:interface=127.0.0.1", validator=_checked(_endpoint))
    token: str | None = field(
        default=None, validator=_checked(_optional(_matching(r"\S+", "a token without spaces")))
    )


@frozen
class Proxy(_Declared):
    """
    A whole configuration: what a configuration file defines as C{proxy}.

    Besides each argument, it checks the configuration as a whole: each pool
    name names one pool, and no two listeners, nor a listener and the admin
    endpoint, listen on the same port and interface.

    @ivar listeners: at least one L{HTTPListener} or L{TCPListener}.
    @ivar admin: the admin endpoint, or L{None} for none.
    @ivar services: L{IServiceFactory} providers whose services run beside the
        listeners.
    @ivar drain_timeout: seconds a stopping listener lets its connections
        finish (requests in flight, TCP relays) before it cuts those left:
        on shutdown (C{SIGTERM}), and for a listener that a reload removes
        or restarts.
    """

    listeners: tuple[HTTPListener | TCPListener, ...] = field(
        converter=_to_tuple,
        validator=_checked(
            _required("a proxy needs at least one listener"),
            _collection,
            each=_instance_of(HTTPListener, TCPListener, name="an HTTPListener or a TCPListener"),
        ),
    )
    admin: Admin | None = field(default=None, validator=_checked(_optional(_instance_of(Admin))))
    services: tuple[IServiceFactory, ...] = field(
        default=(),
        converter=_to_tuple,
        validator=_checked(_collection, each=_provides(IServiceFactory)),
    )
    drain_timeout: float = field(default=30.0, validator=_checked(_positive))

    def __attrs_post_init__(self) -> None:
        """
        Check the configuration as a whole, once each argument is checked.
        """
        self._check_pool_names()
        self._check_endpoints()

    @property
    def pools(self) -> tuple[Pool, ...]:
        """
        Every distinct pool, in the order first met: listener by listener, the
        pools of an HTTP listener's routes, and a TCP listener's pool and then
        those of its SNI routes.
        """
        listeners = _instances(self.listeners, _Listener)
        return tuple({id(pool): pool for each in listeners for pool in each._pools()}.values())

    def _check_pool_names(self) -> None:
        """
        Report each pool that takes the name of another pool.
        """
        named: dict[str, Pool] = {}
        for pool in self.pools:
            if isinstance(pool.name, str):
                first = named.setdefault(pool.name, pool)
                if first is not pool:
                    message = f"duplicate pool name {pool.name!r} (also at {first._location})"
                    _report(pool, "name", message)

    def _check_endpoints(self) -> None:
        """
        Report each listener, or the admin endpoint, that would listen where
        another listener does.
        """
        users: list[_Listener | Admin] = [*_instances(self.listeners, _Listener)]
        users.extend(_instances((self.admin,), Admin))
        listening: dict[tuple[object, ...], _Listener | Admin] = {}
        for user in users:
            key = _listening_key(user.endpoint)
            if key is None:
                continue
            if key in listening:
                first = listening[key]
                _report(user, "endpoint", f"same endpoint as {_call(first)} at {first._location}")
            else:
                listening[key] = user


def load(path: str | os.PathLike[str]) -> Proxy:
    """
    Run a configuration file and return the L{Proxy} it defines as C{proxy}.

    The file runs as a module of its own. Mistakes do not stop it: each is
    recorded with its line, and all are raised together at the end.

    @param path: the file.
    @return: the configuration.
    @raise InvalidConfiguration: with every mistake found: the file could not
        be read or compiled, it raised an exception, it defines no C{proxy} or
        one that is not a L{Proxy}, or arguments in it are wrong.
    """
    collector = _Collector(os.fspath(path))
    token = _collecting.set(collector)
    try:
        proxy = _run(collector)
    finally:
        _collecting.reset(token)
    if proxy is None or collector.errors:
        errors = sorted(collector.errors, key=lambda error: (error.line is None, error.line or 0))
        raise InvalidConfiguration(tuple(errors))
    return proxy


def _run(collector: _Collector) -> Proxy | None:
    """
    Run the file as a module and take its C{proxy}, recording in C{collector}
    why the file cannot be run to its end or defines no L{Proxy}.

    @return: the file's L{Proxy}, or L{None} when it has none.
    """
    try:
        with io.open_code(collector.file) as source:
            code = compile(source.read(), collector.file, "exec")
    except OSError as error:
        collector.fail(None, "", f"cannot read the file: {error.strerror or error}")
        return None
    except SyntaxError as error:
        collector.fail(error.lineno, "", f"{type(error).__name__}: {error.msg}")
        return None
    namespace: dict[str, object] = {"__name__": "__txproxy_config__", "__file__": collector.file}
    try:
        exec(code, namespace)
    except Exception as error:  # the file's own mistake: report it like the others
        lines = [
            line
            for frame, line in traceback.walk_tb(error.__traceback__)
            if frame.f_code.co_filename == collector.file
        ]
        collector.fail(lines[-1] if lines else None, "", f"{type(error).__name__}: {error}")
        return None
    if "proxy" not in namespace:
        collector.fail(None, "proxy", "not defined: the file must set proxy = Proxy(...)")
        return None
    proxy = namespace["proxy"]
    if not isinstance(proxy, Proxy):
        collector.fail(None, "proxy", f"must be a Proxy, not {_shown(proxy)}")
        return None
    return proxy
