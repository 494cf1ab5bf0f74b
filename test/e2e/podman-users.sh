#!/bin/bash
# podman containers whose processes run as a non-root user, on layerfs (as
# the overlay driver's mount_program, FUSE driver forced) and on podman's
# native kernel overlay (no mount_program): the same image, the same steps,
# and the two outputs must be equal line for line.
#
# Configurations: rootful `--user 1000:1000`, `--user 1000:1000 --group-add
# 2000`, an image built with `USER 1000`; rootless `--user 1000`,
# `--userns=keep-id` (the container user is the host user) and
# `--userns=keep-id:uid=1000,gid=1000`. In each the user reads and is denied
# lower files by mode bits and by POSIX ACLs carried in the image, writes in
# dirs it owns, copies up files it owns, and creates with umask 022 and 077
# (the steps are in /steps.sh in the image; see below).
#
# usage: test/e2e/podman-users.sh PATH-TO-LAYERFS     (as root; installs
# podman, runc, busybox-static, uidmap and acl from Debian when missing)
set -uo pipefail
layerfs=$(readlink -f "${1:?usage: $0 PATH-TO-LAYERFS}")
[ "$(id -u)" = 0 ] || { echo "e2e-users: run as root"; exit 1; }

. "$(dirname "$0")/lib.sh"
need_packages e2e-users podman:podman runc:runc busybox:busybox-static newuidmap:uidmap \
	fusermount3:fuse3 setfacl:acl

umask 022 # the image's modes
top=$(mktemp -d /tmp/lfs-users.XXXXXX)
chmod 755 "$top"
user=layerfs-e2e
fuse_mode=$(stat -c %a /dev/fuse)
cleanup() {
	local f p m
	# Rootless podman leaves a pause process per runtime dir behind; its
	# mount namespace holds the rootless mounts.
	for f in "$top"/x?/libpod/tmp/pause.pid; do
		[ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
	done
	for p in $(pgrep -f -- "$top/" 2>/dev/null); do kill "$p" 2>/dev/null; done
	chmod "$fuse_mode" /dev/fuse
	for m in $(grep -o " $top[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
	rm -rf "$top" 2>/dev/null
}
trap cleanup EXIT

# --- the image
# A busybox root whose files are owned by root except where noted, with
# POSIX ACLs for uid 1000 set here with the host's setfacl: the tarball
# carries them as SCHILY.xattr.system.posix_acl_* records, which podman
# import applies.
rootfs=$top/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,run,pub,rootdir,home/u1000,acl-dir}
cp "$(command -v busybox)" "$rootfs/bin/"
for c in sh cat ls echo rm mkdir mv chmod chown stat touch id head cut tr printf sort sed; do
	ln -s busybox "$rootfs/bin/$c"
done
printf 'root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/home/u1000:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nu1000:x:1000:\ng2000:x:2000:\n' > "$rootfs/etc/group"
mk() { # mk PATH MODE OWNER CONTENT
	echo "$4" > "$rootfs/$1"; chmod "$2" "$rootfs/$1"; chown "$3" "$rootfs/$1"
}
mk pub/world 0644 0:0 world
mk secret 0600 0:0 secret
mk rootdir/file 0644 0:0 rootfile
mk home/u1000/mine 0644 1000:1000 mine
mk home/u1000/rootfile 0644 0:0 'root in my dir'
mk owned 0644 1000:1000 owned
mk grp 0640 0:2000 group-2000
mk acl-r 0600 0:0 acl-r
mk acl-none 0644 0:0 acl-none
mk acl-rw 0600 0:0 acl-rw
chown 1000:1000 "$rootfs/home/u1000"
mkdir -m 1777 "$rootfs/tmp"
mk tmp/rootfile 0666 0:0 sticky
setfacl -m u:1000:r "$rootfs/acl-r"
setfacl -m u:1000:- "$rootfs/acl-none"
setfacl -m u:1000:rw "$rootfs/acl-rw"
setfacl -m u:1000:rwx,d:u:1000:rwx "$rootfs/acl-dir"

# The steps, run as the container's user: one line each, "NAME: ok OUTPUT",
# "NAME: EACCES", "NAME: EPERM" or "NAME: error MESSAGE", then the owners
# and modes of what they touched. No inode numbers or times, so that the
# two drivers' outputs compare. Lines that depend on the ids named in POSIX
# ACLs start with "ACL".
cat > "$rootfs/steps.sh" <<'STEPS'
t() {
	n=$1; shift
	if o=$("$@" 2>&1); then echo "$n: ok${o:+ $(printf %s "$o" | tr '\n' ' ')}"
	else case $o in
		*"Permission denied"*) echo "$n: EACCES";;
		*"Operation not permitted"*) echo "$n: EPERM";;
		*) echo "$n: error $(printf %s "$o" | tr '\n' ' ')";;
	esac; fi
}
w() { sh -c 'echo "$2" > "$1"' - "$@"; }  # w FILE TEXT: create or truncate
a() { sh -c 'echo "$2" >> "$1"' - "$@"; } # a FILE TEXT: append
echo "fstype: $(head -1 /proc/mounts | cut -d' ' -f3)"
echo "id: $(id -u) $(id -g) $(id -G)"
t "read /pub/world (0644 root, lower)" cat /pub/world
t "read /secret (0600 root, lower)" cat /secret
t "read /secret2 (0600 root, build layer)" cat /secret2
t "create in /rootdir (0755 root, lower)" w /rootdir/new x
t "mkdir in /rootdir" mkdir /rootdir/sub
t "rm /rootdir/file" rm -f /rootdir/file
t "mv /rootdir/file to /tmp" mv /rootdir/file /tmp/stolen
t "append to /pub/world" a /pub/world x
t "truncate /pub/world" w /pub/world x
t "chmod /pub/world" chmod 777 /pub/world
t "touch /pub/world" touch /pub/world
t "chown /owned (0644 1000:1000, lower) to root" chown 0 /owned
t "read /pub/world after that" cat /pub/world
t "create in /home/u1000 (0755 1000:1000, lower)" w /home/u1000/new new
t "read /home/u1000/new" cat /home/u1000/new
t "mkdir /home/u1000/sub" mkdir /home/u1000/sub
t "create in /home/u1000/sub" w /home/u1000/sub/f f
t "mv /home/u1000/new to renamed" mv /home/u1000/new /home/u1000/renamed
t "rm /home/u1000/rootfile (0644 root, lower)" rm -f /home/u1000/rootfile
t "ls /home/u1000" ls /home/u1000
t "append to /home/u1000/mine (0644 1000:1000, lower: copy-up)" a /home/u1000/mine more
t "read /home/u1000/mine" cat /home/u1000/mine
t "append to /home/u1000/from-build (0644 1000:1000, build layer: copy-up)" a /home/u1000/from-build more
t "read /home/u1000/from-build" cat /home/u1000/from-build
t "chmod 600 /home/u1000/from-build" chmod 600 /home/u1000/from-build
t "append to /owned (copy-up in a root dir)" a /owned more
t "read /owned" cat /owned
t "create in /tmp (1777, lower)" w /tmp/t t
t "read /tmp/t" cat /tmp/t
t "append to /tmp/rootfile (0666 root, lower)" a /tmp/rootfile more
t "rm /tmp/rootfile (sticky /tmp)" rm -f /tmp/rootfile
t "read /grp (0640 root:2000, lower)" cat /grp
t "ACL u:1000:r on /acl-r (0600 root): read" cat /acl-r
t "ACL u:1000:- on /acl-none (0644 root): read" cat /acl-none
t "ACL u:1000:- on /acl-none: append" a /acl-none x
t "ACL u:1000:rw on /acl-rw (0600 root): append (copy-up)" a /acl-rw more
t "ACL u:1000:rw on /acl-rw: read after copy-up" cat /acl-rw
t "ACL u:1000:rwx, default u:1000:rwx on /acl-dir (0755 root): create, umask 077" sh -c 'umask 077; echo f > /acl-dir/f'
t "ACL default: read /acl-dir/f" cat /acl-dir/f
t "umask 022: create files and a dir" sh -c 'umask 022; echo > /home/u1000/f022 && mkdir /home/u1000/d022 && echo > /tmp/f022'
t "umask 077: create files and a dir" sh -c 'umask 077; echo > /home/u1000/f077 && mkdir /home/u1000/d077 && echo > /tmp/f077'
for f in /pub/world /owned /home/u1000 /home/u1000/mine /home/u1000/from-build /home/u1000/f022 \
	/home/u1000/d022 /home/u1000/f077 /home/u1000/d077 /tmp/t /tmp/f022 /tmp/f077 /acl-rw /acl-dir/f; do
	case $f in /acl*) p="ACL ";; *) p=;; esac
	echo "${p}stat: $(stat -c '%A %u %g %s' $f 2>&1) $f"
done
for d in /home/u1000 /home/u1000/sub /tmp /rootdir /acl-dir; do
	case $d in /acl*) p="ACL ";; *) p=;; esac
	echo "${p}ls -ln $d:"
	ls -ln $d 2>&1 | sed -E "s/^([^ ]+) +([0-9]+) +([0-9]+) +([0-9]+) +([0-9]+) +[A-Z][a-z]+ +[0-9]+ +[0-9:]+ /  \1 \2 \3 \4 \5 /; s/^/$p  /"
done
echo done
STEPS
chmod 755 "$rootfs/steps.sh"
tar --xattrs --xattrs-include='*' --numeric-owner -C "$rootfs" -cf "$top/rootfs.tar" .
check "image: the tarball carries the ACLs" grep -qa 'SCHILY.xattr.system.posix_acl_default' "$top/rootfs.tar"
# A build layer (its RUN as root) and an image with USER 1000 over it.
ctx=$top/ctx
mkdir "$ctx"
cat > "$ctx/Containerfile" <<'CF'
FROM localhost/bb:base
RUN echo from-build > /home/u1000/from-build && chown 1000:1000 /home/u1000/from-build && echo secret2 > /secret2 && chmod 600 /secret2
CF
cat > "$ctx/Containerfile.user" <<'CF'
FROM localhost/bb:img
USER 1000
CF
chmod -R a+rX "$ctx" "$top/rootfs.tar"

images() { # images PODMAN: imports and builds the images with PODMAN
	local pm=$1
	$pm import -q "$top/rootfs.tar" localhost/bb:base >/dev/null &&
		$pm build -q --network=none -t localhost/bb:img -f "$ctx/Containerfile" "$ctx" >/dev/null &&
		$pm build -q --network=none -t localhost/bb:user -f "$ctx/Containerfile.user" "$ctx" >/dev/null
}

declare -A out # out[CONFIG/DRIVER]: what /steps.sh printed
configs=()
steps() { # steps CONFIG DRIVER PODMAN RUN-ARGS...: runs /steps.sh in a container
	local name=$1 driver=$2 pm=$3; shift 3
	[ $driver = kernel ] || configs+=("$name")
	out[$name/$driver]=$($pm run --rm "$@" sh /steps.sh 2>&1 | grep -v 'is not a shared mount')
}
phase_start=$SECONDS
phase() { echo "== $1 ($((SECONDS - phase_start)) s)"; phase_start=$SECONDS; }

# --- rootful
podman_in() { # podman_in DIR PODMAN-ARGS...: podman with the config in DIR
	local d=$1; shift
	CONTAINERS_STORAGE_CONF=$d/storage.conf CONTAINERS_CONF=$d/containers.conf podman "$@"
}
mkdir -p "$top/root-layerfs"
wrapper "$top/root-layerfs/layerfs-fuse" fuse
conf "$top/root-layerfs" "$top/root-layerfs/layerfs-fuse"
conf "$top/root-kernel"
for driver in layerfs kernel; do
	pm="podman_in $top/root-$driver"
	images "$pm"
	check "rootful $driver: import and build the images" test $? = 0
	steps "rootful --user 1000:1000" $driver "$pm" --user 1000:1000 localhost/bb:img
	steps "rootful --user 1000:1000 --group-add 2000" $driver "$pm" --user 1000:1000 --group-add 2000 localhost/bb:img
	steps "rootful, image with USER 1000" $driver "$pm" localhost/bb:user
	$pm rm -a -f >/dev/null 2>&1
	$pm rmi -a -f >/dev/null 2>&1
	phase "rootful $driver"
done
check "rootful: podman called layerfs" test -s "$top/root-layerfs/layerfs-fuse.calls"
sleep 0.5
check "rootful: no mount left after podman rm" lacks "$(cat /proc/mounts)" "$top/"
check "rootful: no layerfs server left after podman rm" test -z "$(pgrep -f "layerfs.*$top/root-" || true)"

# --- rootless
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
uid=$(id -u "$user") gid=$(id -g "$user")
chmod 666 /dev/fuse
podman_user() { # podman_user HOME RUNTIME-DIR PODMAN-ARGS...: podman as $user
	local h=$1 r=$2; shift 2
	setpriv --reuid="$uid" --regid="$gid" --init-groups \
		env HOME="$h" XDG_CONFIG_HOME="$h/config" XDG_RUNTIME_DIR="$r" \
		CONTAINERS_CONF="$h/config/containers/containers.conf" podman "$@"
}
# Rootless podman (4.3) misses the exit of every container and waits 20 s
# for it ("Exceeded conmon timeout" in its debug log) where the storage
# lives under a path of more than 28 characters ($home/config/containers/
# run is the run root here): the home dirs are $top/l and $top/k.
for driver in layerfs kernel; do
	home=$top/${driver:0:1} runtime=$top/x${driver:0:1}
	mkdir -p "$home/config/containers" "$runtime"
	if [ $driver = layerfs ]; then
		wrapper "$home/layerfs-fuse" fuse
		conf "$home/config/containers" "$home/layerfs-fuse"
	else
		conf "$home/config/containers"
	fi
	chown -R "$user:" "$home" "$runtime"; chmod 700 "$runtime"
	pm="podman_user $home $runtime"
	images "$pm" 2>&1 | grep -v 'is not a shared mount'
	check "rootless $driver: import and build the images" test "${PIPESTATUS[0]}" = 0
	t0=$SECONDS
	steps "rootless --user 1000" $driver "$pm" --user 1000 localhost/bb:img
	[ $((SECONDS - t0)) -lt 15 ] || echo "warning: a rootless podman run took $((SECONDS - t0)) s (see above)"
	steps "rootless --userns=keep-id" $driver "$pm" --userns=keep-id localhost/bb:img
	steps "rootless --userns=keep-id:uid=1000,gid=1000" $driver "$pm" --userns=keep-id:uid=1000,gid=1000 localhost/bb:img
	$pm rm -a -f >/dev/null 2>&1
	$pm rmi -a -f >/dev/null 2>&1
	phase "rootless $driver"
done
check "rootless: podman called layerfs" test -s "$top/l/layerfs-fuse.calls"
sleep 0.5
check "rootless: no layerfs server left after podman rm" test -z "$(pgrep -f "layerfs.*$top/l/" || true)"
echo "rootless: podman's id mappings for layerfs under keep-id:"
tr ', ' '\n\n' < "$top/l/layerfs-fuse.calls" | grep -E '^[ug]idmapping=' | sort -u | sed 's/^/     /'

# --- what each configuration must show
# For a user who is uid 1000, gid 1000 (the owner of /home/u1000, /owned
# and the files of the build layer there, named by the ACLs).
expect_u1000() {
	cat <<EX
read /pub/world (0644 root, lower): ok world
read /secret (0600 root, lower): EACCES
read /secret2 (0600 root, build layer): EACCES
create in /rootdir (0755 root, lower): EACCES
mkdir in /rootdir: EACCES
rm /rootdir/file: EACCES
mv /rootdir/file to /tmp: EACCES
append to /pub/world: EACCES
truncate /pub/world: EACCES
chmod /pub/world: EPERM
touch /pub/world: EACCES
chown /owned (0644 1000:1000, lower) to root: EPERM
read /pub/world after that: ok world
create in /home/u1000 (0755 1000:1000, lower): ok
read /home/u1000/new: ok new
mkdir /home/u1000/sub: ok
create in /home/u1000/sub: ok
mv /home/u1000/new to renamed: ok
rm /home/u1000/rootfile (0644 root, lower): ok
ls /home/u1000: ok from-build mine renamed sub
append to /home/u1000/mine (0644 1000:1000, lower: copy-up): ok
read /home/u1000/mine: ok mine more
append to /home/u1000/from-build (0644 1000:1000, build layer: copy-up): ok
read /home/u1000/from-build: ok from-build more
chmod 600 /home/u1000/from-build: ok
append to /owned (copy-up in a root dir): ok
read /owned: ok owned more
create in /tmp (1777, lower): ok
read /tmp/t: ok t
append to /tmp/rootfile (0666 root, lower): ok
rm /tmp/rootfile (sticky /tmp): EPERM
umask 022: create files and a dir: ok
umask 077: create files and a dir: ok
stat: -rw-r--r-- 0 0 6 /pub/world
stat: -rw-r--r-- 1000 1000 11 /owned
stat: drwxr-xr-x 1000 1000 4096 /home/u1000
stat: -rw-r--r-- 1000 1000 10 /home/u1000/mine
stat: -rw------- 1000 1000 16 /home/u1000/from-build
stat: -rw-r--r-- 1000 1000 1 /home/u1000/f022
stat: drwxr-xr-x 1000 1000 4096 /home/u1000/d022
stat: -rw------- 1000 1000 1 /home/u1000/f077
stat: drwx------ 1000 1000 4096 /home/u1000/d077
stat: -rw-r--r-- 1000 1000 2 /tmp/t
stat: -rw-r--r-- 1000 1000 1 /tmp/f022
stat: -rw------- 1000 1000 1 /tmp/f077
ACL u:1000:r on /acl-r (0600 root): read: ok acl-r
ACL u:1000:- on /acl-none (0644 root): read: EACCES
ACL u:1000:- on /acl-none: append: EACCES
ACL u:1000:rw on /acl-rw (0600 root): append (copy-up): ok
ACL u:1000:rw on /acl-rw: read after copy-up: ok acl-rw more
ACL u:1000:rwx, default u:1000:rwx on /acl-dir (0755 root): create, umask 077: ok
ACL default: read /acl-dir/f: ok f
ACL stat: -rw-rw---- 0 0 12 /acl-rw
ACL stat: -rw-rw-r-- 1000 1000 2 /acl-dir/f
EX
}
# For another user (keep-id: the host user's uid), with no part in the
# image's ids.
expect_other() {
	cat <<EX
id: $uid $gid $gid
read /pub/world (0644 root, lower): ok world
read /secret (0600 root, lower): EACCES
create in /rootdir (0755 root, lower): EACCES
rm /rootdir/file: EACCES
append to /pub/world: EACCES
chmod /pub/world: EPERM
chown /owned (0644 1000:1000, lower) to root: EPERM
create in /home/u1000 (0755 1000:1000, lower): EACCES
mkdir /home/u1000/sub: EACCES
rm /home/u1000/rootfile (0644 root, lower): EACCES
ls /home/u1000: ok from-build mine rootfile
append to /home/u1000/mine (0644 1000:1000, lower: copy-up): EACCES
append to /owned (copy-up in a root dir): EACCES
chmod 600 /home/u1000/from-build: EPERM
create in /tmp (1777, lower): ok
append to /tmp/rootfile (0666 root, lower): ok
rm /tmp/rootfile (sticky /tmp): EPERM
read /grp (0640 root:2000, lower): EACCES
umask 022: create files and a dir: EACCES
stat: -rw-r--r-- 0 0 6 /pub/world
stat: -rw-r--r-- 1000 1000 6 /owned
stat: drwxr-xr-x 1000 1000 4096 /home/u1000
stat: -rw-r--r-- 1000 1000 5 /home/u1000/mine
stat: -rw-r--r-- $uid $gid 2 /tmp/t
ACL u:1000:r on /acl-r (0600 root): read: EACCES
ACL u:1000:- on /acl-none (0644 root): read: ok acl-none
ACL u:1000:rw on /acl-rw (0600 root): append (copy-up): EACCES
ACL u:1000:rwx, default u:1000:rwx on /acl-dir (0755 root): create, umask 077: EACCES
EX
}
expect() { # expect CONFIG: the lines CONFIG's output must have
	case $1 in
	*"keep-id") expect_other;;
	*"--group-add 2000") echo "id: 1000 1000 1000 2000"; echo "read /grp (0640 root:2000, lower): ok group-2000"; expect_u1000;;
	*) echo "id: 1000 1000 1000"; echo "read /grp (0640 root:2000, lower): EACCES"; expect_u1000;;
	esac
}

# --- the checks
# Under keep-id podman's native overlay runs the container on a copy of
# the image chowned to the container's mapping, and leaves the ids named in
# POSIX ACLs as they are: an ACL entry for the image's uid 1000 then names
# another user in the container. layerfs is given the mapping and maps ACL
# ids like owners. There the lines that depend on ACL ids are checked
# against what the image means, not compared with native overlay.
acl_ids_unmapped() { [[ $1 == *keep-id* ]]; }
missing() { # missing WANT HAVE: the lines of WANT that HAVE lacks
	grep -vxF -f <(printf '%s\n' "$2") <<<"$1"
}
for c in "${configs[@]}"; do
	echo "== $c"
	l=${out[$c/layerfs]} k=${out[$c/kernel]}
	check "$c, layerfs: the user's shell ran the steps" contains "$l" done
	check "$c, layerfs: the container root is fuse.layerfs" contains "$l" "fstype: fuse.layerfs"
	check "$c, kernel: the container root is kernel overlay" contains "$k" "fstype: overlay"
	want=$(expect "$c")
	while IFS= read -r line; do
		check "$c, layerfs: '$line'" contains "$l" "$line"
	done <<<"$want"
	if acl_ids_unmapped "$c"; then
		want=$(grep -v '^ACL' <<<"$want")
		l=$(grep -v '^ACL' <<<"$l") k=$(grep -v '^ACL' <<<"$k")
	fi
	m=$(missing "$want" "$k")
	check "$c, kernel: shows every line expected (the expectations hold)" test -z "$m"
	[ -z "$m" ] || sed 's/^/     | kernel overlay lacks: /' <<<"$m"
	l=$(grep -v '^fstype:' <<<"$l") k=$(grep -v '^fstype:' <<<"$k")
	check "$c: layerfs prints what kernel overlay prints$(acl_ids_unmapped "$c" && echo ' (but ACL lines)')" test "$l" = "$k"
	[ "$l" = "$k" ] || diff <(echo "$k") <(echo "$l") | sed 's/^/     | kernel vs layerfs: /'
	if acl_ids_unmapped "$c"; then
		d=$(diff <(grep '^ACL' <<<"${out[$c/kernel]}") <(grep '^ACL' <<<"${out[$c/layerfs]}"))
		[ -z "$d" ] || sed 's/^/     | ACL lines (checked against the image, above), native vs layerfs: /' <<<"$d"
	fi
done

echo "e2e-users: $passed passed, $failed failed"
[ "$failed" = 0 ]
