"""
Caching and compression: a shared HTTP cache in memory in front of a static
file origin, with compressed variants stored once per coding.

It starts a demo origin on 127.0.0.1:8090 that serves a page, its style
sheet and script, and 64 KiB of JSON, each with Cache-Control, ETag and
Last-Modified; txproxy listens on 127.0.0.1:8080 and its admin API on
127.0.0.1:9000.

    twistd -n txproxy --config etc/examples/cache.py
    curl -I http://127.0.0.1:8080/data.json        Cache-Status: txproxy; fwd=uri-miss; ...; stored
    curl -I http://127.0.0.1:8080/data.json        Cache-Status: txproxy; hit; ttl=...
    curl --compressed -sD- -o/dev/null http://127.0.0.1:8080/data.json
                                                   the gzip (or br) variant: a miss, then hits
    curl -X DELETE 'http://127.0.0.1:9000/cache?url=http://127.0.0.1:8080/data.json'
    curl -X DELETE 'http://127.0.0.1:9000/cache?prefix=http://127.0.0.1:8080/'

Point StaticOrigin at a directory of your own with directory="/srv/www".
"""

from txproxy.config import (
    AccessLog,
    Admin,
    Cache,
    Compression,
    HTTPListener,
    Pool,
    Proxy,
    Route,
    Server,
)
from txproxy.demo import StaticOrigin

static = Pool("static", servers=[Server("127.0.0.1:8090")])

proxy = Proxy(
    listeners=[
        HTTPListener(
            "tcp:8080:interface=127.0.0.1",
            routes=[
                Route(
                    static,
                    cache=Cache(
                        max_size=256 * 1024 * 1024,  # bytes in memory; least recently used go first
                        max_object_size=16 * 1024 * 1024,  # larger responses pass, unstored
                        stale_while_revalidate=30,  # serve up to 30 s stale while refreshing
                        stale_if_error=3600,  # serve up to an hour stale while the origin fails
                    ),
                    # Stored compressed: one variant per coding, encoded once.
                    compression=Compression(
                        types=("text/*", "application/json", "application/javascript")
                    ),
                ),
            ],
            access_log=AccessLog(),  # the upstream field says "cache" for hits
        ),
    ],
    admin=Admin("tcp:9000:interface=127.0.0.1"),  # DELETE /cache?url=... purges
    services=[StaticOrigin("127.0.0.1:8090", max_age=60)],
)
