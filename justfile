# Everyday commands. Each is a thin alias for `cargo xtask ...`, which needs
# nothing but rustup's toolchain, so these work with or without `just`.

# Build everything and run the demo gateway with its example upstreams.
demo:
    cargo xtask demo

# Build the plugins and run the whole test suite.
test *ARGS:
    cargo xtask test {{ARGS}}

# rustfmt and clippy (-D warnings) over the host and guest workspaces.
lint:
    cargo xtask lint

# Build the example and test plugins (wasm32-wasip2, release).
plugins:
    cargo xtask plugins

# The table of record of docs/benchmarks.md: the release build beside nginx
# and nginx+Lua in one bench/peers.sh run (installs what it needs).
# Settings via peers.sh's environment, e.g. `REPEAT=1 just bench`.
bench:
    cargo xtask bench

# How cost grows: cores, 10,000 idle and 1,000 slow clients, 10-1,000 APIs,
# 1-100 plugins, 1 GiB bodies, overload at a fixed rate (bench/scale.sh).
bench-scale *SECTIONS:
    cargo xtask bench scale {{SECTIONS}}

# The rest of docs/benchmarks.md: micro-benchmarks, njs, HAProxy, Caddy,
# the access log, balancing and TLS.
bench-extra:
    cargo xtask bench extra

# The container image portcullis:VERSION (podman or docker): the release binary
# and an example configuration, FROM scratch.
image:
    cargo xtask image

# Build the image, then run it and check its promises (podman or docker).
image-test:
    cargo xtask image-test
