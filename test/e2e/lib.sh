# Helpers shared by the podman end-to-end scripts (sourced, not run).
# wrapper needs $layerfs, the binary under test.

# need_packages PREFIX CMD:PACKAGE...: installs from Debian the packages
# whose command is missing.
need_packages() {
	local prefix=$1 need=() c; shift
	for c in "$@"; do
		command -v "${c%%:*}" >/dev/null || need+=("${c#*:}")
	done
	if [ ${#need[@]} -gt 0 ]; then
		echo "$prefix: installing ${need[*]}"
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || exit 1
	fi
}

passed=0 failed=0
check() { # check NAME COMMAND...
	local name=$1; shift
	if "$@"; then passed=$((passed + 1)); echo "ok   $name"
	else failed=$((failed + 1)); echo "FAIL $name"; fi
}
contains() { grep -qxF -- "$2" <<<"$1"; }
not() { ! "$@"; }
lacks() { ! grep -qF -- "$2" <<<"$1"; }

conf() { # conf DIR [MOUNT_PROGRAM]: storage.conf and containers.conf in DIR
	# (without a mount program podman's overlay driver uses kernel overlay)
	mkdir -p "$1"
	cat > "$1/storage.conf" <<SC
[storage]
driver = "overlay"
runroot = "$1/run"
graphroot = "$1/graph"
[storage.options.overlay]
SC
	[ -z "${2:-}" ] || echo "mount_program = \"$2\"" >> "$1/storage.conf"
	cat > "$1/containers.conf" <<'CC'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
CC
}

# A wrapper that forces the FUSE driver and records podman's calls.
wrapper() { # wrapper PATH DRIVER
	printf '#!/bin/sh\necho "$*" >> %s.calls\nexec %s --driver=%s "$@"\n' "$1" "$layerfs" "$2" > "$1"
	chmod 755 "$1"
}
