# -*- test-case-name: tests.test_balancing -*-
"""
The balancers: the L{IBalancer} providers a pool may name in its configuration.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from hashlib import blake2b

from attrs import define, field
from zope.interface import implementer

from txproxy.interfaces import IBalancer, IServerView, PickContext


def _eligible(server: IServerView, context: PickContext) -> bool:
    """
    Whether C{server} may be picked: it is available and not already tried.
    """
    return server.available and server.address not in context.exclude


def _lighter(server: IServerView, other: IServerView) -> bool:
    """
    Whether C{server} carries less load for its weight than C{other} does.

    The loads C{active / weight} are compared by cross-multiplying, in exact
    integer arithmetic.
    """
    return server.active * other.weight < other.active * server.weight


@implementer(IBalancer)
@define(eq=False)
class RoundRobin:
    """
    Smooth weighted round robin, as nginx's C{ngx_http_upstream_get_peer} does it.

    Each pick adds every eligible server's weight to its current weight, picks
    the server with the highest (the first in order on a tie), and takes the
    total weight of the eligible servers off the winner. Weights 5, 1 and 1 for
    C{a}, C{b} and C{c} give C{a a b a c a a}, spreading C{a}'s turns rather
    than running them together.

    Current weights are kept by address: an address no longer given is
    forgotten, and a new one starts at zero, so servers may come and go.
    """

    _current: dict[str, int] = field(factory=dict, init=False, repr=False)

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        See L{IBalancer.pick}.
        """
        current = {server.address: self._current.get(server.address, 0) for server in servers}
        total = 0
        best: IServerView | None = None
        for server in servers:
            if not _eligible(server, context):
                continue
            current[server.address] += server.weight
            total += server.weight
            if best is None or current[server.address] > current[best.address]:
                best = server
        if best is not None:
            current[best.address] -= total
        self._current = current
        return best


@implementer(IBalancer)
@define(eq=False)
class LeastConnections:
    """
    Weighted least connections: the server with the fewest active connections
    for its weight.

    Servers tied for the lightest load take turns in configuration order: the
    balancer remembers the position after its last pick and starts looking for
    a tied server there, so idle servers share the work rather than the first
    one taking it all.
    """

    _next: int = field(default=0, init=False, repr=False)

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        See L{IBalancer.pick}.
        """
        tied: list[tuple[int, IServerView]] = []
        for index, server in enumerate(servers):
            if not _eligible(server, context):
                continue
            if not tied or _lighter(server, tied[0][1]):
                tied = [(index, server)]
            elif not _lighter(tied[0][1], server):
                tied.append((index, server))
        if not tied:
            return None
        index, server = next(
            ((index, server) for index, server in tied if index >= self._next), tied[0]
        )
        self._next = index + 1
        return server


def _rendezvous_score(key: bytes, server: IServerView) -> float:
    """
    The weighted rendezvous score of C{server} for C{key}: the highest wins.

    With C{h} a hash of the key and address spread evenly over (0, 1), the
    score C{-weight / ln(h)} makes each server win a share of the keys in
    proportion to its weight, and depends on that server alone: adding or
    removing another server never changes which of the rest scores highest.
    """
    digest = blake2b(server.address.encode() + b"\0" + key, digest_size=8).digest()
    # 52 bits plus one half is exact in a double and strictly inside (0, 1),
    # so the logarithm is finite and never zero.
    unit = ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52
    return -server.weight / math.log(unit)


@implementer(IBalancer)
@define(eq=False)
class IPHash:
    """
    Consistent hashing of C{context.hash_key} (the client's address) by
    weighted rendezvous hashing.

    The same key goes to the same server while that server is eligible. When a
    server leaves, is excluded, or becomes unavailable, only the keys it held
    move, each to the server that scores next highest for it. Without a key,
    picks fall back to L{RoundRobin}.
    """

    _round_robin: RoundRobin = field(factory=RoundRobin, init=False, repr=False)

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        See L{IBalancer.pick}.
        """
        key = context.hash_key
        if key is None:
            return self._round_robin.pick(servers, context)
        return max(
            (server for server in servers if _eligible(server, context)),
            key=lambda server: _rendezvous_score(key, server),
            default=None,
        )


@implementer(IBalancer)
@define(eq=False)
class PowerOfTwo:
    """
    The power of two random choices: draw two distinct eligible servers at
    random and pick the one with fewer active connections for its weight.

    As in nginx's C{random two}, each draw favours a server in proportion to
    its weight; on equal loads the first drawn wins. It suits several proxies
    sharing the same servers: each counts only its own connections, and under
    least connections they would all pile onto the server each sees as idle.

    @ivar _random: returns a float in [0, 1); C{random.random} unless a test
        scripts it.
    """

    _random: Callable[[], float] = field(default=random.random, repr=False)

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        See L{IBalancer.pick}.
        """
        candidates = [server for server in servers if _eligible(server, context)]
        if len(candidates) < 2:
            return candidates[0] if candidates else None
        first = candidates.pop(self._draw(candidates))
        second = candidates[self._draw(candidates)]
        return second if _lighter(second, first) else first

    def _draw(self, servers: Sequence[IServerView]) -> int:
        """
        The index of a server drawn at random, each with a chance in proportion
        to its weight.
        """
        point = self._random() * sum(server.weight for server in servers)
        for index, server in enumerate(servers):
            point -= server.weight
            if point < 0:
                return index
        return len(servers) - 1  # random() * total rounded up to total.


BALANCERS: Mapping[str, Callable[[], IBalancer]] = {
    "round_robin": RoundRobin,
    "least_connections": LeastConnections,
    "ip_hash": IPHash,
    "random": PowerOfTwo,
}


@define
class UnknownBalancer(ValueError):
    """
    A balancer was named that is not one of L{BALANCERS}, or given as an object
    that does not provide L{IBalancer}.

    @ivar name: the name or object given.
    """

    name: object

    def __str__(self) -> str:
        return f"unknown balancer {self.name!r}; known balancers: {', '.join(sorted(BALANCERS))}"


def balancer_for(spec: str | IBalancer) -> IBalancer:
    """
    Turn a pool's C{balancer} setting into a balancer.

    @param spec: a name from L{BALANCERS}, or an L{IBalancer} provider.
    @return: a new balancer of the named kind, or C{spec} itself.
    @raise UnknownBalancer: when C{spec} is neither.
    """
    if isinstance(spec, str):
        try:
            factory = BALANCERS[spec]
        except KeyError:
            raise UnknownBalancer(spec) from None
        return factory()
    if IBalancer.providedBy(spec):
        return spec
    raise UnknownBalancer(spec)
