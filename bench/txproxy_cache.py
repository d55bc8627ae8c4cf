"""
txproxy's HTTP listener in front of bench/cache.py's origin: one route, with
a cache and gzip compression, or either alone, as the environment says.

    TXPROXY_BENCH_CACHE=1|0      a Cache() on the route (default 1)
    TXPROXY_BENCH_GZIP_LEVEL=N   Compression(algorithms=("gzip",), level=N); 0 for none (default 6)

bench/cache.py gives the two addresses in the environment too; to run it by hand:

    TXPROXY_BENCH_LISTEN=tcp:9000:interface=127.0.0.1 TXPROXY_BENCH_ORIGIN=127.0.0.1:8081 \
        twistd -n txproxy --config bench/txproxy_cache.py
"""

import os

from txproxy.config import Cache, Compression, HTTPListener, Pool, Proxy, Route, Server

listen = os.environ.get("TXPROXY_BENCH_LISTEN", "tcp:9000:interface=127.0.0.1")
origin = Pool("origin", servers=[Server(os.environ.get("TXPROXY_BENCH_ORIGIN", "127.0.0.1:8081"))])
cache = Cache() if os.environ.get("TXPROXY_BENCH_CACHE", "1") == "1" else None
level = int(os.environ.get("TXPROXY_BENCH_GZIP_LEVEL", "6"))
compression = (
    Compression(types=("application/json",), level=level, algorithms=("gzip",)) if level else None
)

proxy = Proxy(
    listeners=[HTTPListener(listen, routes=[Route(origin, cache=cache, compression=compression)])]
)
