"""
TCP load balancing in front of a database: least connections, one backup.

    twistd -n txproxy --config etc/examples/tcp.py
    psql -h 127.0.0.1 -p 15432 ...
"""

from txproxy.config import Limits, Pool, Proxy, Server, TCPListener

db = Pool(
    "db",
    servers=[
        Server("127.0.0.1:5432"),
        Server("127.0.0.1:5433", weight=2),
        Server("127.0.0.1:5434", backup=True),  # only while neither primary is up
    ],
    balancer="least_connections",
    retries=2,  # after a refused or timed-out connect, try up to two other servers
)

proxy = Proxy(
    listeners=[
        TCPListener(
            "tcp:15432:interface=127.0.0.1",
            pool=db,
            limits=Limits(upstream_connect_timeout=2.0, client_idle_timeout=3600.0),
        ),
    ],
)
