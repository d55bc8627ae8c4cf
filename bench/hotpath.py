"""
The Python cost of one keep-alive request through txproxy's HTTP path, without sockets.

    python bench/hotpath.py             # microseconds per request, best of 7 rounds
    python bench/hotpath.py --profile   # and the functions that cost the most
    python bench/hotpath.py --cache     # a cache hit: the route caches, nothing goes upstream

A client connection and an upstream connection run over StringTransports on a
memory reactor, as the unit tests do; each round feeds a request in and a
response back. What this measures is txproxy's own work per request (parsing,
routing, header policy, the exchange): on a shared, noisy machine it moves far
less than wrk's numbers do, so it is the one to watch while optimising.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from email.utils import formatdate

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from txproxy import config
from txproxy.http.listener import HTTPFactory
from txproxy.http.upstream import IdleUpstreams
from txproxy.service import build_pool

REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 06:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
    + b"x"
    * 100
)


def one_request_loop(cache: bool = False) -> Callable[[], None]:
    """
    Build a listener with one client and one upstream connection, and return
    a function that plays one request and its response through them; with
    C{cache}, a route that caches, and a function that plays one request
    answered from the cache.
    """
    reactor = MemoryReactorClock()
    reactor.advance(time.time())
    pool = config.Pool("origin", servers=[config.Server("10.0.0.1:80")])
    idle = IdleUpstreams(reactor, reactor, pool.keepalive, pool.keepalive_timeout)
    route = config.Route(pool, cache=config.Cache() if cache else None)
    listener = config.HTTPListener("tcp:0", routes=[route])
    factory = HTTPFactory(listener, {"origin": build_pool(pool)}, {"origin": idle}, reactor, None)
    peer = IPv4Address("TCP", "192.0.2.1", 5000)
    channel = factory.buildProtocol(peer)
    client = StringTransport(peerAddress=peer)
    channel.makeConnection(client)
    channel.dataReceived(REQUEST)
    _, _, connecting, _, _ = reactor.tcpClients[-1]
    upstream = StringTransport()
    wrapper = connecting.buildProtocol(None)
    wrapper.makeConnection(upstream)
    if cache:
        date = formatdate(reactor.seconds(), usegmt=True).encode("ascii")
        wrapper.dataReceived(
            RESPONSE.replace(b"Sun, 29 Nov 2026 06:00:00 GMT", date).replace(
                b"Connection:", b"Cache-Control: max-age=3600\r\nConnection:"
            )
        )
        client.clear()
        upstream.clear()

        channel.dataReceived(REQUEST)
        if b"Cache-Status: txproxy; hit" not in client.value():
            raise SystemExit(f"not a cache hit: {client.value()[:300]!r}")
        client.clear()

        def hit() -> None:
            channel.dataReceived(REQUEST)
            client.clear()

        return hit
    wrapper.dataReceived(RESPONSE)
    client.clear()
    upstream.clear()

    def round_trip() -> None:
        channel.dataReceived(REQUEST)
        wrapper.dataReceived(RESPONSE)
        client.clear()
        upstream.clear()

    return round_trip


def main(argv: list[str]) -> None:
    """
    Print the cost per request, and with C{--profile} the top functions.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--profile", action="store_true", help="also profile 20,000 requests")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000, help="requests per round")
    parser.add_argument("--cache", action="store_true", help="measure cache hits instead")
    options = parser.parse_args(argv)
    round_trip = one_request_loop(options.cache)
    for _ in range(1000):
        round_trip()
    best = float("inf")
    for _ in range(options.rounds):
        start = time.perf_counter()
        for _ in range(options.requests):
            round_trip()
        best = min(best, (time.perf_counter() - start) / options.requests)
    print(f"{best * 1e6:.1f} us per keep-alive request (best of {options.rounds} rounds)")
    if options.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(20000):
            round_trip()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main(sys.argv[1:])
