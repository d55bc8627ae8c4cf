"""
txproxy's TCP listener in front of the benchmark origin, as bench/run.py runs it.

bench/run.py gives the two addresses in the environment; to run it by hand:

    TXPROXY_BENCH_LISTEN=tcp:9001:interface=127.0.0.1 TXPROXY_BENCH_ORIGIN=127.0.0.1:8081 \
        twistd -n txproxy --config bench/txproxy_tcp.py
"""

import os

from txproxy.config import Pool, Proxy, Server, TCPListener

listen = os.environ.get("TXPROXY_BENCH_LISTEN", "tcp:9001:interface=127.0.0.1")
origin = Pool("origin", servers=[Server(os.environ.get("TXPROXY_BENCH_ORIGIN", "127.0.0.1:8081"))])

proxy = Proxy(listeners=[TCPListener(listen, pool=origin)])
