#!/bin/sh
# piforge-node vs serf on loopback, inside a private network namespace (needs root, iproute2,
# python3, Debian `serf`). Builds the release binary first. Usage: node/bench/bench.sh [10,100]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
sizes=${1:-10,100}
target=${CARGO_TARGET_DIR:-$here/../../target}
(cd "$here/.." && nice -n 10 cargo build --release -p piforge-node >&2)
ns=piforge-bench-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
nice -n 10 ip netns exec "$ns" python3 "$here/bench.py" --piforge "$target/release/piforge-node" --sizes "$sizes"
