# carebroker container image. Build: docker build -t carebroker .
# Run:  docker run -p 8080:8080 -v /srv/carebroker:/var/lib/carebroker \
#         -e CAREBROKER__SERVER__PUBLIC_URL=https://carebroker.example.nhs.uk carebroker
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    pkg-config libssl-dev libxml2-dev libxmlsec1-dev libclang-dev && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY tests ./tests
COPY examples ./examples
RUN cargo build --release --locked --bin carebroker

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    ca-certificates libssl3 libxml2 libxmlsec1 libxmlsec1-openssl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/carebroker --create-home carebroker
COPY --from=build /src/target/release/carebroker /usr/local/bin/carebroker
COPY config/carebroker.toml /etc/carebroker/carebroker.toml
USER carebroker
WORKDIR /var/lib/carebroker
# Behind TLS termination: listen on all interfaces, public URL must be https (set it at run time).
ENV CAREBROKER__SERVER__LISTEN=0.0.0.0:8080 \
    CAREBROKER__CLIENTS__DIR=/etc/carebroker/clients \
    CAREBROKER__KEYS__DIR=/var/lib/carebroker/keys \
    CAREBROKER__STORE__SQLITE_PATH=/var/lib/carebroker/carebroker.db
EXPOSE 8080
ENTRYPOINT ["carebroker"]
CMD ["serve", "--config", "/etc/carebroker/carebroker.toml"]
