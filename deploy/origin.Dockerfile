# The origin's container image: `docker build -f deploy/origin.Dockerfile -t aside-origin .`
# (from the repository root). Multi-stage: the build stage has the Rust toolchain, the image only the
# binary, CA certificates and a non-root user.
FROM rust:1.93-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p aside-origin \
 && cp target/release/aside-origin /aside-origin

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 aside \
 && useradd --system --uid 10001 --gid aside --no-create-home --shell /usr/sbin/nologin aside
COPY --from=build /aside-origin /usr/local/bin/aside-origin
USER 10001:10001
EXPOSE 8080
# Listen on every interface inside the container (the default is loopback); secrets come as files
# (ASIDE_*_FILE), see deploy/kubernetes.
ENV ASIDE_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/aside-origin"]
CMD ["serve"]
