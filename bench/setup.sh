#!/bin/sh
# Install what bench/run.py drives: nginx (origin, reverse proxy, and stream if
# its build has the module), HAProxy, wrk, and for the TLS scenarios openssl
# (s_time) and h2load (nghttp2-client), all from Debian's packages.
# Run as root (or through sudo).
set -e
apt-get update
apt-get install -y nginx haproxy wrk openssl nghttp2-client
# nginx's stream module is a separate package on Debian; nginx stream is
# benchmarked only when it is there.
apt-get install -y libnginx-mod-stream || echo "libnginx-mod-stream not available: nginx stream is skipped"
