#!/bin/bash
# Runs the end-to-end suites, each a real client of layerfs compared with
# kernel overlay under the same client, and says which failed.
#
# usage: test/e2e/all.sh PATH-TO-LAYERFS [SUITE...]
# SUITE is a script's name without .sh (podman, podman-users, docker, ...);
# without any, every suite of this directory runs.
set -u
layerfs=${1:?usage: $0 PATH-TO-LAYERFS [SUITE...]}; shift
dir=$(dirname "$0")
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
	for s in podman podman-users docker containerd buildah; do
		[ -x "$dir/$s.sh" ] && suites+=("$s")
	done
fi
failed=()
for s in "${suites[@]}"; do
	echo "=== e2e suite: $s"
	start=$SECONDS
	"$dir/$s.sh" "$layerfs" || failed+=("$s")
	echo "=== e2e suite: $s took $((SECONDS - start))s"
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "e2e: failed suites: ${failed[*]}"
	exit 1
fi
echo "e2e: all suites passed: ${suites[*]}"
