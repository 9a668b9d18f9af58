#!/bin/sh
# Runs a firmware ELF on QEMU's mps2-an385; the cargo runner of this board.
#   cargo run --release                          # UART0 on tcp 127.0.0.1:4321, id from the build
#   SWITCHBOARD_DEVICE_ID=dev1 UART_PORT=4500 cargo run --release
#   UART_DEV=/tmp/dev0-fw cargo run --release    # UART0 on a tty (one end of a socat pty pair)
# The device id reaches the firmware at run time as `-append id=...` (semihosting command line).
# defmt logs come out of QEMU's stdout (semihosting); they are decoded with defmt-print when it
# is installed (`cargo install defmt-print --locked`), else saved raw to $DEFMT_OUT.
set -eu
elf="$1"
shift
if [ -n "${UART_DEV:-}" ]; then
    serial="-chardev serial,id=s0,path=$UART_DEV -serial chardev:s0"
    where="tty $UART_DEV"
else
    port="${UART_PORT:-4321}"
    serial="-serial tcp:127.0.0.1:$port,server=on,wait=off,nodelay=on"
    where="tcp 127.0.0.1:$port (e.g. socat - TCP:127.0.0.1:$port)"
fi
id="${SWITCHBOARD_DEVICE_ID:-}"
echo "qemu-mps2: UART0 on $where; device id ${id:-(firmware default)}; Ctrl-C to stop" >&2
# $serial is split into words on purpose.
# shellcheck disable=SC2086
set -- qemu-system-arm -machine mps2-an385 -cpu cortex-m3 -display none -monitor none \
    $serial -semihosting-config enable=on,target=native -kernel "$elf" -append "id=$id" "$@"
if command -v defmt-print >/dev/null 2>&1; then
    "$@" | defmt-print -e "$elf"
else
    out="${DEFMT_OUT:-defmt.bin}"
    echo "qemu-mps2: defmt-print not found; raw defmt log in $out" >&2
    "$@" > "$out"
fi
