# ci/lib/targets.sh: the Pi targets and architectures, for the ci/ scripts (sourced by
# ci/lib/common.sh, never run).
#
# The two tables below are the shell twin of config/src/arch.rs (PAYLOAD_TARGETS and the names
# of Arch); its test `shell_table_is_this_table` fails when they differ, so change both
# together. What it deliberately doesn't hold: anything only the shell needs (qemu-user
# binaries, what file(1) says), which stays in functions below the tables.

# shellcheck shell=bash

# Payload targets: ci/payload --targets name, alias, Rust triple, and the Debian arch of the
# images they are for (the payload subdirectory). The first target of each arch is its default:
# armv6hf (ARMv6 with VFP, like Raspberry Pi OS armhf itself, so it also runs on a Pi Zero/1)
# before armhf (ARMv7: Pi 2 and later only).
PIFORGE_PAYLOAD_TARGETS='
arm64    aarch64  aarch64-unknown-linux-musl      arm64
armv6hf  armv6    arm-unknown-linux-musleabihf    armhf
armhf    armv7    armv7-unknown-linux-musleabihf  armhf
'

# Architectures: Debian name, multiarch tuple, glibc dynamic loader.
PIFORGE_ARCHES='
arm64  aarch64-linux-gnu    ld-linux-aarch64.so.1
armhf  arm-linux-gnueabihf  ld-linux-armhf.so.3
'

# Prints column $2 (1-based) of the row of table $1 whose first column (or, for targets, the
# second) is $3; fails when there is none.
_piforge_lookup() {
    local row
    row="$(awk -v key="$3" -v col="$2" -v alias="$4" \
        '$1 == key || (alias && $2 == key) { print $col; found = 1; exit } END { exit !found }' \
        <<<"$1")" || return 1
    echo "$row"
}

# Payload target (name or alias) -> Rust triple.
target_triple() { _piforge_lookup "$PIFORGE_PAYLOAD_TARGETS" 3 "$1" 1; }
# Payload target (name or alias) -> payload directory (the Debian arch of its images).
target_dir_name() { _piforge_lookup "$PIFORGE_PAYLOAD_TARGETS" 4 "$1" 1; }
# The default targets, one per arch (what ci/payload builds without --targets), comma-separated.
default_targets() {
    awk 'NF && !seen[$4]++ { printf "%s%s", sep, $1; sep = "," } END { print "" }' \
        <<<"$PIFORGE_PAYLOAD_TARGETS"
}
# Debian arch -> multiarch tuple; -> dynamic loader.
arch_multiarch() { _piforge_lookup "$PIFORGE_ARCHES" 2 "$1" ""; }
arch_loader() { _piforge_lookup "$PIFORGE_ARCHES" 3 "$1" ""; }

# Shell only: the qemu-user binary that runs a target's (or arch's) binaries.
target_qemu() {
    case "$1" in
        arm64 | aarch64) echo qemu-aarch64-static ;;
        *) echo qemu-arm-static ;;
    esac
}
# Shell only: what `file` must say about a binary of this target (or arch).
target_file_machine() {
    case "$1" in
        arm64 | aarch64) echo 'ARM aarch64' ;;
        *) echo 'ARM, EABI5' ;;
    esac
}
