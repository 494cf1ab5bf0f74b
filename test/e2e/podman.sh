#!/bin/bash
# podman as a real client of layerfs: storage.conf names layerfs as the
# overlay driver's mount_program, for root and for a rootless user. Builds a
# layer over a busybox image, runs containers that change the tree, checks
# podman diff, commits and reads the commit back, and checks that nothing
# (mount, server) is left behind.
#
# usage: test/e2e/podman.sh PATH-TO-LAYERFS     (as root; installs podman,
# runc, busybox-static and uidmap from Debian when missing)
set -uo pipefail
layerfs=$(readlink -f "${1:?usage: $0 PATH-TO-LAYERFS}")
[ "$(id -u)" = 0 ] || { echo "e2e: run as root"; exit 1; }

. "$(dirname "$0")/lib.sh"
need_packages e2e podman:podman runc:runc busybox:busybox-static newuidmap:uidmap fusermount3:fuse3

# Short: rootless podman 4.3 waits 20 s after every container when its
# runtime dir's path is long.
top=$(mktemp -d /tmp/lfe.XXXXXX)
chmod 755 "$top"
user=layerfs-e2e
fuse_mode=$(stat -c %a /dev/fuse)
cleanup() {
	chmod "$fuse_mode" /dev/fuse
	# Rootless podman leaves a pause process behind (its namespaces hold
	# the rootless mounts).
	for f in "$top"/rootless/runtime/libpod/tmp/pause.pid; do
		[ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	for m in $(grep -o " $top[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
	pkill -f "layerfs.*$top" 2>/dev/null
	rm -rf "$top" 2>/dev/null
}
trap cleanup EXIT

# The base image: a busybox root filesystem.
rootfs=$top/rootfs
mkdir -p "$rootfs"/{bin,etc,d,tmp,dir-to-replace,proc,sys,dev}
cp "$(command -v busybox)" "$rootfs/bin/"
for c in sh ls cat echo rm mkdir mv ln chmod chown stat test grep touch id true head sort wc; do ln -s busybox "$rootfs/bin/$c"; done
echo base > "$rootfs/etc/motd"
echo keep > "$rootfs/d/keep"; echo old > "$rootfs/d/old"
echo gone > "$rootfs/gone"
echo a > "$rootfs/dir-to-replace/a"; echo b > "$rootfs/dir-to-replace/b"
for f in link-src chmod-me own-me rename-me; do echo "$f" > "$rootfs/$f"; done
tar -C "$rootfs" -cf "$top/rootfs.tar" .
chmod -R a+rX "$top"

cat > "$top/Containerfile" <<'CF'
FROM localhost/bb:base
RUN echo modified >> /etc/motd && rm /gone && rm -r /dir-to-replace && mkdir /dir-to-replace && echo new > /dir-to-replace/c
CF

# scenario NAME RUNAS: runs every step as RUNAS (root or the rootless user)
# with podman configured by $CONTAINERS_STORAGE_CONF/XDG_CONFIG_HOME.
scenario() {
	local name=$1 pm=$2
	echo "== $name"
	$pm import "$top/rootfs.tar" localhost/bb:base >/dev/null || { check "$name: import" false; return; }
	check "$name: build a layer (modify, delete, replace a dir)" \
		$pm build -q --network=none -t localhost/bb:l2 -f "$top/Containerfile" "$top" >/dev/null
	$pm rm -f c1 >/dev/null 2>&1
	local run; run=$($pm run --name c1 localhost/bb:l2 sh -ec '
		echo c1 >> /etc/motd; rm /d/old; mv /rename-me /renamed; ln /link-src /hardlink
		chmod 600 /chmod-me; chown 12:34 /own-me; echo added > /added
		stat -c "links=%h" /hardlink; test "$(stat -c %i /hardlink)" = "$(stat -c %i /link-src)" && echo same-inode
		echo via-hardlink >> /hardlink; cat /link-src' 2>&1)
	check "$name: run a container that changes the tree" test $? = 0
	for want in links=2 same-inode via-hardlink; do
		check "$name: in the container, the hard link shows '$want'" contains "$run" "$want"
	done
	local diff; diff=$($pm diff c1 2>&1)
	for line in "C /etc/motd" "D /d/old" "A /renamed" "D /rename-me" "A /hardlink" "C /chmod-me" "C /own-me" "A /added"; do
		check "$name: podman diff has '$line'" contains "$diff" "$line"
	done
	check "$name: podman diff does not bring back /gone" lacks "$diff" "/gone"
	check "$name: commit" $pm commit -q c1 localhost/bb:l3 >/dev/null
	local out; out=$($pm run --rm localhost/bb:l3 sh -c '
		cat /etc/motd; ls /d; ls /dir-to-replace; test -e /gone && echo GONE-IS-BACK
		test -e /rename-me && echo RENAME-SOURCE-BACK; cat /renamed
		cat /hardlink; stat -c "mode=%a" /chmod-me; stat -c "owner=%u:%g" /own-me; cat /added' 2>&1)
	echo "$out" | sed 's/^/     | /'
	# A hard link to a file of a lower layer cannot stay one in an image
	# layer (OCI layers link only within themselves): its content must.
	for want in base modified c1 keep c rename-me via-hardlink mode=600 owner=12:34 added; do
		check "$name: committed image shows '$want'" contains "$out" "$want"
	done
	for bad in old a b GONE-IS-BACK RENAME-SOURCE-BACK; do
		check "$name: committed image has no '$bad'" not contains "$out" "$bad"
	done
	$pm rm c1 >/dev/null
	sleep 0.5
	check "$name: no mount left after podman rm" lacks "$(cat /proc/mounts)" "$top/$name"
	check "$name: no layerfs server left after podman rm" test -z "$(pgrep -f "layerfs.*$top/$name" || true)"
}

# --- rootful
wrapper "$top/rootful/layerfs-fuse" fuse 2>/dev/null || { mkdir -p "$top/rootful"; wrapper "$top/rootful/layerfs-fuse" fuse; }
conf "$top/rootful" "$top/rootful/layerfs-fuse"
podman_root() { CONTAINERS_STORAGE_CONF=$top/rootful/storage.conf CONTAINERS_CONF=$top/rootful/containers.conf podman "$@"; }
scenario rootful podman_root
check "rootful: podman called layerfs" test -s "$top/rootful/layerfs-fuse.calls"
echo "rootful: podman's mount_program arguments: $(head -1 "$top/rootful/layerfs-fuse.calls" | sed "s|$top|\$T|g")"
rootfs_type=$(podman_root run --rm localhost/bb:base head -1 /proc/mounts | cut -d' ' -f3)
check "rootful: container root is fuse.layerfs" test "$rootfs_type" = fuse.layerfs

# auto driver, rootful: which one does it pick?
mkdir -p "$top/rootful-auto"; wrapper "$top/rootful-auto/layerfs-auto" auto
conf "$top/rootful-auto" "$top/rootful-auto/layerfs-auto"
auto_type=$(CONTAINERS_STORAGE_CONF=$top/rootful-auto/storage.conf CONTAINERS_CONF=$top/rootful-auto/containers.conf \
	sh -c "podman import -q $top/rootfs.tar localhost/bb:base >/dev/null && podman run --rm localhost/bb:base head -1 /proc/mounts" | cut -d' ' -f3)
echo "rootful: --driver=auto served the container root with: $auto_type"
check "rootful: auto driver mounted a working root" test -n "$auto_type"
podman_root rmi -a -f >/dev/null 2>&1
CONTAINERS_STORAGE_CONF=$top/rootful-auto/storage.conf CONTAINERS_CONF=$top/rootful-auto/containers.conf podman rmi -a -f >/dev/null 2>&1

# --- rootless
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
uid=$(id -u "$user")
chmod 666 /dev/fuse
home=$top/rootless
mkdir -p "$home/config/containers" "$home/runtime"
wrapper "$home/layerfs-fuse" fuse
conf "$home/config/containers" "$home/layerfs-fuse"
chown -R "$user:" "$home"; chmod 700 "$home/runtime"
podman_user() {
	setpriv --reuid="$uid" --regid="$(id -g "$user")" --init-groups \
		env HOME="$home" XDG_CONFIG_HOME="$home/config" XDG_RUNTIME_DIR="$home/runtime" \
		CONTAINERS_CONF="$home/config/containers/containers.conf" podman "$@"
}
scenario rootless podman_user
check "rootless: podman called layerfs" test -s "$home/layerfs-fuse.calls"
rootfs_type=$(podman_user run --rm localhost/bb:base head -1 /proc/mounts | cut -d' ' -f3)
check "rootless: container root is fuse.layerfs" test "$rootfs_type" = fuse.layerfs
podman_user rmi -a -f >/dev/null 2>&1

# auto driver, rootless: podman runs the mount program as mapped root in
# its user namespace.
wrapper "$home/layerfs-auto" auto
conf "$home/config/containers" "$home/layerfs-auto"
chown -R "$user:" "$home"
auto_type=$(podman_user import -q "$top/rootfs.tar" localhost/bb:base >/dev/null && podman_user run --rm localhost/bb:base head -1 /proc/mounts | cut -d' ' -f3)
echo "rootless: --driver=auto served the container root with: $auto_type"
check "rootless: auto driver mounted a working root" test -n "$auto_type"
podman_user rmi -a -f >/dev/null 2>&1

# --- layerfs diff and layerfs export on podman's layers (issue 8)
# For a stopped container, `layerfs diff --upper UpperDir --lower LowerDir`
# must print the lines `podman diff` prints, and `podman import` must take
# the tarball `layerfs export` writes.
#
# Two differences are normalized, each only on the exact lines concerned:
# - podman diff leaves out the paths podman itself makes in every
#   container (mount points such as /etc/hosts, /run/.containerenv: libpod's
#   "init inodes"). layerfs diff lists them, as docker diff does: they are
#   in the upper dir.
# - With a mount_program podman diffs by mounting both trees and comparing
#   stat (mode, owner, size, mtime), so a file copied up only to be hard
#   linked keeps its stat and is not listed. layerfs diff lists it (C), as
#   docker's overlay2 diff does: the upper holds a copy, and a layer made
#   from this upper must carry it for the link. Here that is /link-src.
podman_hides='[AC] /(dev|etc/hostname|etc/hosts|etc/resolv.conf|etc/mtab|proc|run|run/notify|run/\.containerenv|run/secrets|sys)'
podman_same_stat='C /link-src'
quiet() { "$@" >/dev/null; }
dx_scenario() { # dx_scenario NAME PODMAN OUTDIR [RUNNER...]: RUNNER runs layerfs
	local name=$1 pm=$2 outdir=$3; shift 3
	echo "== $name: layerfs diff and export"
	$pm import -q "$top/rootfs.tar" localhost/bb:base >/dev/null &&
		$pm build -q --network=none -t localhost/bb:l2 -f "$top/Containerfile" "$top" >/dev/null ||
		{ check "$name: build the image for diff and export" false; return; }
	$pm rm -f dx >/dev/null 2>&1
	$pm run --name dx localhost/bb:l2 sh -ec '
		echo c1 >> /etc/motd; rm /d/old; mv /d /d-moved
		rm -r /dir-to-replace; mkdir /dir-to-replace; echo z > /dir-to-replace/z
		mv /rename-me /renamed; mkdir -p /new/sub; echo n > /new/sub/f
		ln /link-src /hardlink; chmod 600 /chmod-me; chown 12:34 /own-me
		ln -s motd /etc/motd-link; busybox mkfifo /fifo
		busybox dd if=/dev/zero of=/sparse bs=1 count=1 seek=1048576 2>/dev/null' >/dev/null 2>&1
	check "$name: run a container that changes the tree" test $? = 0
	local upper lower
	upper=$($pm inspect --format '{{.GraphDriver.Data.UpperDir}}' dx)
	lower=$($pm inspect --format '{{.GraphDriver.Data.LowerDir}}' dx)
	local theirs all ours
	theirs=$($pm diff dx | sort)
	all=$("$@" "$layerfs" diff --upper "$upper" --lower "$lower")
	ours=$(grep -vxE "$podman_hides" <<<"$all" | grep -vxF "$podman_same_stat" | sort)
	echo "$name: layerfs diff lines podman diff leaves out:" $(grep -xE "$podman_hides|$podman_same_stat" <<<"$all")
	check "$name: layerfs diff prints what podman diff prints" test "$ours" = "$theirs"
	[ "$ours" = "$theirs" ] || diff <(echo "$theirs") <(echo "$ours") | sed 's/^/     | podman diff vs layerfs diff: /'
	local tarball=$outdir/$name-layer.tar
	check "$name: layerfs export" "$@" "$layerfs" export --upper "$upper" --lower "$lower" -o "$tarball"
	check "$name: podman imports the exported layer" quiet $pm import -q "$tarball" localhost/bb:exported
	local listing; listing=$(tar -tvf "$tarball" 2>&1)
	for want in 'etc/motd' 'd-moved/keep' '.wh.d' 'dir-to-replace/.wh..wh..opq' 'link-src link to hardlink' ' 12/34 ' 'sparse'; do
		check "$name: exported layer has '$want'" grep -qF -- "$want" <<<"$listing"
	done
	$pm rm -f dx >/dev/null
	$pm rmi -a -f >/dev/null 2>&1
}
dx_scenario rootful podman_root "$top"
# Rootless: layerfs runs in podman's user namespace, so that the tarball
# carries the container's uids rather than the host's subuids.
conf "$home/config/containers" "$home/layerfs-fuse"
chown -R "$user:" "$home"
dx_scenario rootless podman_user "$home" podman_user unshare

echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
