#!/bin/sh
# Mounts a sample union in a temp dir, walks through what a union does
# (the Docker overlay2 chapter's tutorial, plus whiteouts and opaque
# directories), then unmounts and cleans up.
set -eu
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
d=$(mktemp -d /tmp/layerfs-demo.XXXXXX)
cleanup() {
	fusermount3 -u "$d/merged" 2>/dev/null || umount "$d/merged" 2>/dev/null || true
	rm -rf "$d"
}
trap cleanup EXIT
cd "$d"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; sh -c "$*"; }

mkdir lower1 lower2 upper work merged
touch lower1/lower1_file lower2/lower2_file upper/upper_file
mkdir lower2/etc && echo "from lower2" > lower2/etc/config && echo "old" > lower2/etc/stale

echo "A union of two read-only lowers under a writable upper, in $d"
echo "(--driver=fuse: as root the default, --driver=auto, would hand this mount to kernel overlay)"
step "$bin -v --driver=fuse -o lowerdir=lower1:lower2,upperdir=upper,workdir=work merged"
step "grep ' $d/merged ' /proc/mounts"
step "ls merged"
echo
echo "Writing a lower file copies it up; the lower stays untouched:"
step "echo from_merged >> merged/lower1_file"
step "cat upper/lower1_file; wc -c lower1/lower1_file"
step "touch merged/merged_file && ls upper"
echo
echo "Deleting a lower file leaves a whiteout (a 0/0 character device):"
step "rm merged/etc/stale && ls merged/etc && ls -l upper/etc"
echo
echo "A directory removed and made again is opaque: the lower copy stays hidden:"
step "rm -r merged/etc && mkdir merged/etc && ls -A merged/etc"
step "getfattr -d -m trusted.overlay upper/etc 2>/dev/null || ls -A upper/etc"
step "fusermount3 -u merged"
echo
echo "After unmount the upper dir keeps the changes:"
step "ls -A upper"
echo
echo "demo done"
