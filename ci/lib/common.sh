# ci/lib/common.sh: shell helpers shared by the ci/ scripts (sourced, never run).
#
# What it does: logging, tool checks, the workspace version, the Pi target table (from
# targets.sh) and the "get this tool, or say exactly how" helpers (zig + cargo-zigbuild,
# rust-src, apt packages).
# What it deliberately doesn't: build anything by itself, or touch files outside the
# workspace and the tool cache ($PIFORGE_TOOLS_DIR, default ~/.cache/piforge/tools).

# shellcheck shell=bash

PIFORGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PIFORGE_TOOLS_DIR="${PIFORGE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/piforge/tools}"
# Tested versions; override to try newer ones.
PIFORGE_ZIGLANG_VERSION="${PIFORGE_ZIGLANG_VERSION:-0.17.1}"
PIFORGE_ZIGBUILD_VERSION="${PIFORGE_ZIGBUILD_VERSION:-0.24.0}"

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# Seconds since the epoch with milliseconds, for build timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The workspace version ([workspace.package] version in Cargo.toml).
workspace_version() {
    awk '
        /^\[workspace\.package\]/ { in_pkg = 1; next }
        /^\[/ { in_pkg = 0 }
        in_pkg && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }
    ' "$PIFORGE_ROOT/Cargo.toml"
}

host_triple() { rustc -vV | awk '$1 == "host:" { print $2 }'; }

sha256_of() { sha256sum "$1" | awk '{ print $1 }'; }
size_of() { stat -c %s "$1"; }

# The Pi targets and architectures (target_triple, target_dir_name, default_targets,
# arch_multiarch, arch_loader, target_qemu, target_file_machine): one table, twin of
# config/src/arch.rs.
# shellcheck source=ci/lib/targets.sh
. "$PIFORGE_ROOT/ci/lib/targets.sh"

# Is the prebuilt std for a triple installed in the active toolchain?
has_target_std() {
    local sysroot
    sysroot="$(rustc --print sysroot)" || return 1
    [ -d "$sysroot/lib/rustlib/$1/lib" ]
}

# Make sure `cargo zigbuild` and zig are usable: already on PATH, in our tool cache, or
# installed there now from PyPI (a venv, falling back to `pip install --user`).
ensure_zigbuild() {
    if [ -x "$PIFORGE_TOOLS_DIR/venv/bin/cargo-zigbuild" ]; then
        PATH="$PIFORGE_TOOLS_DIR/venv/bin:$PATH"
        export PATH
    fi
    if have cargo-zigbuild && { have zig || python3 -m ziglang version >/dev/null 2>&1; }; then
        return 0
    fi
    if [ -n "${PIFORGE_NO_TOOL_INSTALL:-}" ]; then
        log "zig and cargo-zigbuild are needed to build std for targets without a prebuilt one"
        log "install them with: pip install ziglang cargo-zigbuild  (PIFORGE_NO_TOOL_INSTALL is set)"
        return 1
    fi
    have python3 || {
        log "python3 is needed to install zig: apt-get install -y python3 python3-venv"
        return 1
    }
    log "installing zig $PIFORGE_ZIGLANG_VERSION and cargo-zigbuild $PIFORGE_ZIGBUILD_VERSION" \
        "from PyPI into $PIFORGE_TOOLS_DIR/venv"
    mkdir -p "$PIFORGE_TOOLS_DIR"
    local pkgs=("ziglang==$PIFORGE_ZIGLANG_VERSION" "cargo-zigbuild==$PIFORGE_ZIGBUILD_VERSION")
    if python3 -m venv "$PIFORGE_TOOLS_DIR/venv" >/dev/null 2>&1 &&
        "$PIFORGE_TOOLS_DIR/venv/bin/pip" install --quiet "${pkgs[@]}" >&2; then
        PATH="$PIFORGE_TOOLS_DIR/venv/bin:$PATH"
        export PATH
    elif python3 -m pip install --quiet --user "${pkgs[@]}" >&2; then
        PATH="$HOME/.local/bin:$PATH"
        export PATH
    else
        log "could not install zig: run 'pip install ziglang cargo-zigbuild' and retry"
        return 1
    fi
    # cargo-zigbuild finds zig through `python3 -m ziglang` of the python on PATH.
    have cargo-zigbuild && { have zig || python3 -m ziglang version >/dev/null 2>&1; }
}

# rust-src is what -Zbuild-std compiles.
ensure_rust_src() {
    local sysroot
    sysroot="$(rustc --print sysroot)"
    [ -d "$sysroot/lib/rustlib/src/rust/library" ] && return 0
    have rustup || {
        log "rust-src is missing and there is no rustup to add it"
        return 1
    }
    log "adding the rust-src component (needed to build std from source)"
    rustup component add rust-src >&2
}

# Install Debian packages when we can (apt-get as root, or with password-less sudo); otherwise
# say which ones. Arguments: pairs of COMMAND PACKAGE.
ensure_debs() {
    local missing=() cmd pkg
    while [ $# -gt 0 ]; do
        cmd="$1" pkg="$2"
        shift 2
        have "$cmd" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    if have apt-get && { [ ${#sudo[@]} -eq 0 ] || sudo -n true 2>/dev/null; }; then
        log "installing ${missing[*]}"
        "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 || true
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >&2
    else
        die "missing tools: install the Debian packages ${missing[*]}"
    fi
}
