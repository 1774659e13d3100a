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

# Optimised (`dist` profile) build, the in-process micro-benchmarks, then the
# peer benchmark (nginx, nginx+Lua, njs, HAProxy, Caddy and portcullis in one
# run). Settings via peers.sh's environment, e.g. `REPEAT=1 just bench`.
bench:
    cargo xtask bench

# The container image portcullis:VERSION (podman or docker): the dist binary
# and an example configuration, FROM scratch.
image:
    cargo xtask image

# Build the image, then run it and check its promises (podman or docker).
image-test:
    cargo xtask image-test
