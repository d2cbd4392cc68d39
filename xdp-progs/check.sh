#!/bin/sh
# Rebuilds the XDP objects into a temporary directory and fails if any
# committed object differs from its rebuild (a stale or hand-edited .o).
# Needs: clang, llvm, libbpf-dev, linux-libc-dev (Debian 12 packages).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s -C "$here" OUT="$tmp"
status=0
for obj in "$tmp"/*.o; do
	name=$(basename "$obj")
	if ! cmp -s "$obj" "$here/$name"; then
		echo "xdp-progs/$name is stale: run 'make -C xdp-progs' and commit it" >&2
		status=1
	fi
done
[ $status -eq 0 ] && echo "xdp-progs: committed objects match their sources"
exit $status
