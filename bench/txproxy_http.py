"""
txproxy's HTTP listener in front of the benchmark origin, as bench/run.py runs it.

One route sends every request to the origin, with txproxy's default limits.
bench/run.py gives the two addresses in the environment; to run it by hand:

    TXPROXY_BENCH_LISTEN=tcp:9000:interface=127.0.0.1 TXPROXY_BENCH_ORIGIN=127.0.0.1:8081 \
        twistd -n txproxy --config bench/txproxy_http.py
"""

import os

from txproxy.config import HTTPListener, Pool, Proxy, Route, Server

listen = os.environ.get("TXPROXY_BENCH_LISTEN", "tcp:9000:interface=127.0.0.1")
origin = Pool("origin", servers=[Server(os.environ.get("TXPROXY_BENCH_ORIGIN", "127.0.0.1:8081"))])

proxy = Proxy(listeners=[HTTPListener(listen, routes=[Route(origin)])])
