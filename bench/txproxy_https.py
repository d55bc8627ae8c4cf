"""
txproxy's HTTP listener terminating TLS in front of the benchmark origin, as bench/run.py runs it.

txproxy's TLS defaults (Mozilla's intermediate profile, ALPN offering h2 and
http/1.1); one route sends every request to the origin over plain HTTP/1.1
with keep-alive. bench/run.py gives the addresses and the certificate (a PEM
file of key, certificate and chain) in the environment; to run it by hand:

    TXPROXY_BENCH_LISTEN=tcp:9443:interface=127.0.0.1 TXPROXY_BENCH_ORIGIN=127.0.0.1:8081 \
        TXPROXY_BENCH_CERTIFICATE=site.pem twistd -n txproxy --config bench/txproxy_https.py
"""

import os

from txproxy.config import TLS, HTTPListener, Pool, Proxy, Route, Server

listen = os.environ.get("TXPROXY_BENCH_LISTEN", "tcp:9443:interface=127.0.0.1")
origin = Pool("origin", servers=[Server(os.environ.get("TXPROXY_BENCH_ORIGIN", "127.0.0.1:8081"))])
tls = TLS(certificates=[os.environ.get("TXPROXY_BENCH_CERTIFICATE", "site.pem")])

proxy = Proxy(listeners=[HTTPListener(listen, routes=[Route(origin)], tls=tls)])
