#!/bin/bash
# buildah bud on layerfs compared with kernel overlay: the same
# Containerfile (ADD of a tarball, RUN steps that unpack a tarball, delete,
# rename and re-create lower dirs, make hard links, chmod, chown and chown
# -h, a USER 1000 step), built with --layers, rootful and rootless, with
# layerfs as the overlay driver's mount_program and with the reference:
# kernel overlay behind a mount_program wrapper (test/e2e/buildah/kovl).
#
# Why that reference: with any mount_program set, containers/storage makes
# layers by naive diff (both trees mounted and compared by stat; deletions
# become .wh. files). Kernel overlay without a mount_program makes them from
# the upper dir and legitimately differs (a re-made dir becomes an opaque
# marker where naive diff writes one whiteout per old entry; a new hard link
# to an unchanged lower file ships as a copy). That build is run too, for
# its time and as information, not compared.
#
# Compared: the images pushed to dir: layer by layer, member by member
# (name, type, mode, uid, gid, size, link target, sha256 of the content;
# not times), whiteouts included, and the final root file systems (stat
# lines and sha256 of every file). The build times are printed.
#
# usage: test/e2e/buildah.sh PATH-TO-LAYERFS     (as root; installs buildah,
# runc, busybox-static, uidmap, fuse3, jq, attr and libcap2-bin from Debian
# when missing)
set -uo pipefail
layerfs=$(readlink -f "${1:?usage: $0 PATH-TO-LAYERFS}")
[ "$(id -u)" = 0 ] || { echo "e2e-buildah: run as root"; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)

. "$here/lib.sh"
need_packages e2e-buildah buildah:buildah runc:runc busybox:busybox-static newuidmap:uidmap \
	fusermount3:fuse3 jq:jq setfattr:attr setcap:libcap2-bin

umask 022
# Short: rootless podman and buildah are slow with long runtime dirs.
top=$(mktemp -d /tmp/lfe-bud.XXXXXX)
chmod 755 "$top"
user=layerfs-e2e
fuse_mode=$(stat -c %a /dev/fuse)
# ours PROGRAM: the pids of PROGRAM's processes that run with our config
# (buildah's command line does not name $top, its environment does)
ours() {
	local p
	for p in $(pgrep -x "$1"); do grep -qzF "$top/" "/proc/$p/environ" 2>/dev/null && echo "$p"; done
}
cleanup() {
	local p m
	for p in $(ours buildah) $(pgrep -f -- "$top/" 2>/dev/null); do kill "$p" 2>/dev/null; done
	for m in $(grep -o " $top[^ ]*" /proc/mounts | sort -r); do umount -l "$m" 2>/dev/null; done
	chmod "$fuse_mode" /dev/fuse
	[ -n "${E2E_KEEP:-}" ] && { echo "e2e-buildah: kept $top"; return; }
	rm -rf "$top" 2>/dev/null
}
trap cleanup EXIT

# --- the base image: a busybox root file system with the lower files the
# steps change
rootfs=$top/rootfs
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,run,home,srv,lower/{gone-dir/sub,rename-dir/sub,remade/sub,deep/a/b,dirmode,keep-dir}}
cp "$(command -v busybox)" "$rootfs/bin/"
for c in sh cat ls echo rm mkdir mv ln chmod chown touch id tar gzip head find sort stat true test; do
	ln -s busybox "$rootfs/bin/$c"
done
mkdir -m 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nu1000:x:1000:1000::/home/u1000:/bin/sh\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nu1000:x:1000:\n' > "$rootfs/etc/group"
for f in keep gone-dir/a gone-dir/sub/b rename-dir/x rename-dir/sub/y rename-file remade/old1 \
	remade/old2 remade/sub/old3 deep/a/b/file linksrc linksrc2 chmod-me suid own-me target keep-dir/f; do
	echo "lower $f" > "$rootfs/lower/$f"
done
ln -s target "$rootfs/lower/symlink"
ln -s /lower/keep "$rootfs/lower/abs-symlink"
ln "$rootfs/lower/keep" "$rootfs/lower/keep-hl" # a hard link in the base layer
chown 3:4 "$rootfs/lower/own-me"
# A tarball in the image, unpacked by a RUN step.
pkg=$top/pkg
mkdir -p "$pkg"/pkg/{bin,share/doc,empty}
echo '#!/bin/sh' > "$pkg/pkg/bin/tool"; chmod 755 "$pkg/pkg/bin/tool"
head -c 100000 /dev/urandom > "$pkg/pkg/share/blob"
echo doc > "$pkg/pkg/share/doc/README"; ln "$pkg/pkg/share/doc/README" "$pkg/pkg/share/doc/README.hl"
ln -s ../share/doc/README "$pkg/pkg/bin/readme"
chown -R 2:2 "$pkg/pkg/share"
tar --numeric-owner -C "$pkg" -czf "$rootfs/lower/pkg.tar.gz" pkg
tar --numeric-owner -C "$rootfs" -cf "$top/rootfs.tar" .

# --- the build context: a tarball for ADD (unpacked into the image, over
# a lower dir too) and the Containerfile
ctx=$top/ctx
mkdir -p "$ctx" "$top/add"/{opt/add/sub,lower/keep-dir}
echo added > "$top/add/opt/add/file"; chmod 640 "$top/add/opt/add/file"
ln "$top/add/opt/add/file" "$top/add/opt/add/sub/file.hl"
ln -s file "$top/add/opt/add/file.sym"
echo over > "$top/add/lower/keep-dir/f"         # replaces a lower file
echo beside > "$top/add/lower/keep-dir/g"
chown -R 7:7 "$top/add/opt/add/sub"
# xattrs: a file capability (dropped by the chown of a RUN step) and a
# user.* xattr, on files of the ADD layer
for f in cap cap-chown; do
	echo "$f" > "$top/add/opt/add/$f"
	setcap cap_net_raw+ep "$top/add/opt/add/$f"
	setfattr -n user.note -v "$f" "$top/add/opt/add/$f"
done
tar --numeric-owner --xattrs --xattrs-include='*' -C "$top/add" -cf "$ctx/add.tar" opt lower
cat > "$ctx/Containerfile" <<'CF'
FROM localhost/bud:base
ADD add.tar /
RUN mkdir -p /srv/unpacked && tar -C /srv/unpacked -xzf /lower/pkg.tar.gz && rm /lower/pkg.tar.gz
RUN rm -r /lower/gone-dir && mv /lower/rename-dir /lower/renamed-dir && mv /lower/rename-file /lower/renamed-file && mv /lower/deep/a /lower/a-moved && echo more >> /lower/a-moved/b/file
RUN rm -r /lower/remade && mkdir /lower/remade && echo new > /lower/remade/new && echo again > /lower/remade/old1
RUN ln /lower/linksrc /lower/hl-lower && echo new-file > /new-file && ln /new-file /new-hl && mkdir /hl && ln /lower/linksrc2 /hl/a && ln /lower/linksrc2 /hl/b && ln /srv/unpacked/pkg/share/blob /hl/blob
RUN chmod 600 /lower/chmod-me && chmod 4755 /lower/suid && chown 12:34 /lower/own-me && chown -h 5:6 /lower/symlink && chown -h 8:9 /lower/abs-symlink && chown 1:1 /opt/add/cap-chown && chmod 700 /lower/dirmode && chown 7:8 /lower/dirmode && mkdir -p /home/u1000 && chown 1000:1000 /home/u1000
USER 1000
RUN echo mine > /home/u1000/mine && mkdir /home/u1000/d && echo f > /home/u1000/d/f && ln -s mine /home/u1000/link && ln /home/u1000/mine /home/u1000/mine.hl && chmod 640 /home/u1000/mine && id -u > /home/u1000/id
CF
layers_expected=8 # base, ADD, 6 RUN; USER makes no layer
# what each layer comes from, for the names of the checks
mapfile -t step < <(grep -v '^USER' "$ctx/Containerfile" | cut -c1-48 |
	sed 's/^FROM.*/the base (buildah add of a rootfs tarball)/; s/$/.../')
chmod -R a+rX "$top"

# --- the stores: one dir per user and mount program, each with its
# storage.conf and containers.conf
# mkstore DIR [MOUNT-PROGRAM]: DIR/config/containers/*.conf with the
# graph root under it; MOUNT-PROGRAM is "layerfs", "kovl" or empty (kernel
# overlay, no mount_program)
mkstore() {
	local d=$1 mp=${2:-}
	mkdir -p "$d/config/containers"
	case $mp in
	layerfs) wrapper "$d/layerfs-fuse" fuse; mp=$d/layerfs-fuse ;;
	kovl) cp "$here/buildah/kovl" "$d/kovl"; mp=$d/kovl ;;
	esac
	conf "$d/config/containers" $mp
}
# in_store DIR COMMAND...: COMMAND (buildah, or a shell) with DIR's config,
# as root
in_store() {
	local d=$1; shift
	env CONTAINERS_STORAGE_CONF=$d/config/containers/storage.conf \
		CONTAINERS_CONF=$d/config/containers/containers.conf BUILDAH_ISOLATION=oci "$@"
}
# as_user DIR RUNTIME COMMAND...: COMMAND as $user with DIR's config
as_user() {
	local d=$1 r=$2; shift 2
	setpriv --reuid="$uid" --regid="$gid" --init-groups \
		env HOME="$d" XDG_CONFIG_HOME="$d/config" XDG_RUNTIME_DIR="$r" \
		CONTAINERS_CONF="$d/config/containers/containers.conf" BUILDAH_ISOLATION=oci "$@"
}

# build NAME RUNNER...: imports the base, builds the image with --layers,
# times it, pushes it to $top/out/NAME and lists the final root file
# system into $top/out/NAME.rootfs. RUNNER runs buildah with the store;
# $unshare is "buildah unshare" for rootless (the mount is made and seen in
# buildah's user namespace), else empty.
declare -A took
build() {
	local name=$1; shift
	local out=$top/out/$name c t0
	mkdir -p "$out"; chmod 777 "$top/out" "$out"
	c=$("$@" buildah from scratch) &&
		"$@" buildah add -q "$c" "$top/rootfs.tar" / >/dev/null &&
		"$@" buildah commit -q "$c" localhost/bud:base >/dev/null &&
		"$@" buildah rm "$c" >/dev/null ||
		{ check "$name: import the base image" false; return 1; }
	t0=$(date +%s.%N)
	"$@" buildah bud -q --layers --network=none -t localhost/bud:built -f "$ctx/Containerfile" "$ctx" \
		> "$out.log" 2>&1
	local rc=$?
	took[$name]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	check "$name: buildah bud --layers (${took[$name]} s)" test $rc = 0 ||
		{ sed 's/^/     | /' "$out.log" | tail -20; return 1; }
	check "$name: buildah push to dir:" \
		"$@" buildah push -q -D localhost/bud:built "dir:$out/image"
	# The final root file system, as a container of the image sees it.
	"$@" $unshare sh -ec '
		c=$(buildah from -q localhost/bud:built)
		m=$(buildah mount "$c")
		cd "$m"
		find . -path ./proc -prune -o -path ./sys -prune -o -path ./dev -prune -o \
			-type d -printf "%y %m %U %G %P\n" -o -printf "%y %m %U %G %n %P -> %l size %s\n" | sort
		find . -type f -exec sha256sum {} + | sort -k2
		getfattr -P -R -d -m - -e hex . 2>/dev/null |
			awk "/^# file: /{ f = substr(\$0, 9); next } /=/{ print \"xattr \" f \" \" \$0 }" | sort
		cd /
		buildah umount "$c" >/dev/null
		buildah rm "$c" >/dev/null' > "$out.rootfs" 2> "$out.rootfs.err"
	check "$name: list the final root file system" test $? = 0 -a -s "$out.rootfs" ||
		sed 's/^/     | /' "$out.rootfs.err" | tail -5
}

# manifest TAR: one line per member (type and mode, uid/gid, size, name,
# link target; no times; the names and sizes of its xattrs), then one line
# per regular file with the sha256 of its content
manifest() {
	tar --numeric-owner --full-time --xattrs --xattrs-include='*' -tvvf "$1" | awk '
		/^  [a-z]: / { sub(/^ +/, ""); prev = prev " [" $0 "]"; next }
		{ if (n++) print prev; $4 = ""; $5 = ""; prev = $0 }
		END { if (n) print prev }' | sort
	tar -xf "$1" --to-command='echo "sha256 $TAR_FILENAME $(sha256sum | cut -c1-64)"' | sort
}
# layers DIR: the layer blobs of the image in DIR (dir: transport), bottom first
layers() {
	jq -r '.layers[].digest' "$1/manifest.json" | sed "s|^sha256:|$1/|"
}

# compare WHAT REF OURS: the checks that OURS' image equals REF's
compare() {
	local what=$1 ref=$top/out/$2 ours=$top/out/$3
	local rl ol n i
	mapfile -t rl < <(layers "$ref/image")
	mapfile -t ol < <(layers "$ours/image")
	check "$what: the reference has the $layers_expected layers expected" test ${#rl[@]} = $layers_expected
	check "$what: as many layers as the reference (${#ol[@]} vs ${#rl[@]})" test ${#ol[@]} = ${#rl[@]}
	n=${#rl[@]}; [ ${#ol[@]} -lt "$n" ] && n=${#ol[@]}
	for ((i = 0; i < n; i++)); do
		manifest "${rl[i]}" > "$ref.layer$i"
		manifest "${ol[i]}" > "$ours.layer$i"
		local members wh
		members=$(grep -vc '^sha256 ' "$ref.layer$i")
		wh=$(grep -v '^sha256 ' "$ref.layer$i" | awk '$4 ~ /(^|\/)\.wh\./' | wc -l)
		check "$what: layer $((i + 1)), $members members, $wh whiteouts, equal: ${step[i]}" \
			cmp -s "$ref.layer$i" "$ours.layer$i" ||
			diff "$ref.layer$i" "$ours.layer$i" | grep '^[<>]' | head -20 | sed 's/^/     | ref vs layerfs: /'
	done
	check "$what: final root file systems equal ($(wc -l < "$ref.rootfs") lines)" \
		cmp -s "$ref.rootfs" "$ours.rootfs" ||
		diff "$ref.rootfs" "$ours.rootfs" | grep '^[<>]' | head -20 | sed 's/^/     | ref vs layerfs: /'
}

# native REF NATIVE: prints, as information, how the build without a
# mount_program (kernel overlay's own layer algorithm) differs from REF
native() {
	local ref=$top/out/$1 nat=$top/out/$2 rl nl i d
	mapfile -t rl < <(layers "$ref/image")
	mapfile -t nl < <(layers "$nat/image")
	echo "info: $2 (no mount_program) has ${#nl[@]} layers, $1 ${#rl[@]}"
	for ((i = 0; i < ${#nl[@]} && i < ${#rl[@]}; i++)); do
		manifest "${nl[i]}" > "$nat.layer$i"
		d=$(diff "$ref.layer$i" "$nat.layer$i" | grep '^[<>]' | grep -v '^. sha256 ')
		[ -z "$d" ] || sed "s/^/info: layer $((i + 1)), $1 vs $2: /" <<<"$d"
	done
	d=$(diff "$ref.rootfs" "$nat.rootfs" | grep '^[<>]')
	[ -z "$d" ] || sed "s/^/info: final root file system, $1 vs $2: /" <<<"$d"
}

# expect NAME: what the image must hold whatever the mount program (so that
# equal cannot mean equally wrong)
expect() {
	local r=$top/out/$1.rootfs
	local want
	for want in \
		'l 777 5 6 1 lower/symlink -> target size 6' \
		'l 777 8 9 1 lower/abs-symlink -> /lower/keep size 11' \
		'f 600 0 0 1 lower/chmod-me ->  size 15' \
		'f 4755 0 0 1 lower/suid ->  size 11' \
		'f 644 12 34 1 lower/own-me ->  size 13' \
		'd 700 7 8 lower/dirmode' \
		'f 644 0 0 1 lower/remade/new ->  size 4' \
		'f 644 0 0 1 lower/remade/old1 ->  size 6' \
		'f 644 0 0 1 lower/renamed-file ->  size 18' \
		'f 644 0 0 1 lower/a-moved/b/file ->  size 25' \
		'f 644 0 0 2 new-hl ->  size 9' \
		'f 644 0 0 2 hl/a ->  size 15' \
		'f 644 2 2 1 hl/blob ->  size 100000' \
		'f 640 7 7 2 opt/add/file ->  size 6' \
		'f 644 0 0 1 lower/keep-dir/f ->  size 5' \
		'f 644 2 2 2 srv/unpacked/pkg/share/doc/README ->  size 4' \
		'f 640 1000 1000 2 home/u1000/mine ->  size 5' \
		'l 777 1000 1000 1 home/u1000/link -> mine size 4' \
		'f 644 1000 1000 1 home/u1000/id ->  size 5'; do
		check "$1: the image has '$want'" grep -qxF -- "$want" "$r"
	done
	check "$1: the image has /opt/add/cap's file capability" grep -q '^xattr opt/add/cap security.capability=' "$r"
	check "$1: the image has /opt/add/cap's user.note" grep -qxF 'xattr opt/add/cap user.note=0x636170' "$r"
	check "$1: chown dropped /opt/add/cap-chown's file capability" not grep -q '^xattr opt/add/cap-chown security.capability' "$r"
	for want in lower/gone-dir lower/rename-dir lower/rename-file lower/deep/a lower/remade/old2 \
		lower/remade/sub lower/pkg.tar.gz; do
		check "$1: the image has no $want" not grep -q " $want -> " "$r"
	done
}

# --- rootful
mkstore "$top/rl" layerfs
mkstore "$top/rk" kovl
mkstore "$top/rn"
unshare=
for s in rl rk rn; do
	echo "== rootful $s"
	build "rootful-$s" in_store "$top/$s"
	in_store "$top/$s" buildah rmi -a -f >/dev/null 2>&1
done
check "rootful: buildah called layerfs" test -s "$top/rl/layerfs-fuse.calls"
check "rootful: buildah called kovl" test -s "$top/rk/kovl.calls"
echo "rootful: kovl dropped:" $(grep -h '^kovl: dropped' "$top/rk/kovl.calls" | sort -u)
expect rootful-rk
expect rootful-rl
compare "rootful" rootful-rk rootful-rl
native rootful-rk rootful-rn
sleep 0.5
check "rootful: no mount left" lacks "$(cat /proc/mounts)" "$top/"
check "rootful: no layerfs server left" test -z "$(pgrep -f "layerfs.*$top/" || true)"

# --- rootless
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
uid=$(id -u "$user") gid=$(id -g "$user")
chmod 666 /dev/fuse
unshare="buildah unshare"
for s in ul uk; do
	echo "== rootless $s"
	case $s in ul) mkstore "$top/$s" layerfs ;; uk) mkstore "$top/$s" kovl ;; esac
	mkdir -p "$top/x$s"
	chown -R "$user:" "$top/$s" "$top/x$s"; chmod 700 "$top/x$s"
	build "rootless-$s" as_user "$top/$s" "$top/x$s"
	as_user "$top/$s" "$top/x$s" buildah rmi -a -f >/dev/null 2>&1
done
check "rootless: buildah called layerfs" test -s "$top/ul/layerfs-fuse.calls"
check "rootless: buildah called kovl" test -s "$top/uk/kovl.calls"
check "rootless: kovl mounted with userxattr" grep -q '^kovl: mount .*,userxattr ' "$top/uk/kovl.calls"
expect rootless-uk
expect rootless-ul
compare "rootless" rootless-uk rootless-ul
sleep 0.5
check "rootless: no layerfs server left" test -z "$(pgrep -f "layerfs.*$top/" || true)"
check "no mount left under $top" lacks "$(cat /proc/mounts)" "$top/"
check "no buildah process left" test -z "$(ours buildah)"

echo "build times (s): $(for n in "${!took[@]}"; do printf '%s %s; ' "$n" "${took[$n]}"; done)"
echo "e2e-buildah: $passed passed, $failed failed"
[ "$failed" = 0 ]
