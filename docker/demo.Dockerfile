# The demo's other services, for docker/compose.yaml and scripts/image:
# scripts/demo-backend (Python's standard library) and redis-server, on
# debian:12 like the gateway, so that the demo needs no other image.
#
#   docker build -f docker/demo.Dockerfile -t meshgate-demo .
#   docker run --network=host meshgate-demo demo-backend 9001 users
FROM debian:12
LABEL io.meshgate.image=demo
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt \
              /var/log/dpkg.log
COPY scripts/demo-backend /usr/local/bin/demo-backend
USER nobody
WORKDIR /tmp
CMD ["demo-backend", "9001", "users"]
