#!/bin/sh
# Runs a firmware ELF on QEMU's mps2-an385 with its LAN9118 on QEMU's user network; the cargo
# runner of this board. The firmware connects out to the gateway's device port at 10.0.2.2,
# which QEMU maps to the host's 127.0.0.1, so no port forwarding is needed.
#   cargo run --release                                   # id from the build, port 8481
#   SWITCHBOARD_DEVICE_ID=eth1 GATEWAY_PORT=18481 cargo run --release
# The id and port reach the firmware at run time as `-append "id=... port=..."` (semihosting
# command line). defmt logs come out of QEMU's stdout (semihosting); they are decoded with
# defmt-print when it is installed (`cargo install defmt-print --locked`), else saved raw to
# $DEFMT_OUT.
set -eu
elf="$1"
shift
id="${SWITCHBOARD_DEVICE_ID:-}"
port="${GATEWAY_PORT:-8481}"
echo "qemu-mps2-eth: device id ${id:-(firmware default)} -> gateway 127.0.0.1:$port; Ctrl-C to stop" >&2
append="port=$port"
if [ -n "$id" ]; then
    append="id=$id $append"
fi
# UART0 goes to /dev/null: QEMU's default would put a console on stdout, among the defmt bytes.
set -- qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -display none -monitor none \
    -serial null -nic user,model=lan9118 -semihosting-config enable=on,target=native \
    -kernel "$elf" -append "$append" "$@"
if command -v defmt-print >/dev/null 2>&1; then
    "$@" | defmt-print -e "$elf"
else
    out="${DEFMT_OUT:-defmt.bin}"
    echo "qemu-mps2-eth: defmt-print not found; raw defmt log in $out" >&2
    "$@" > "$out"
fi
