#!/bin/bash
# chmod of a hard-linked 1 GiB lower file and rm -rf of a lower tree whose
# files all have a second link: kernel overlay (index=on,metacopy=on, and
# defaults) against layerfs builds given as arguments.
set -eu
top=$(mktemp -d /var/tmp/hlb.XXXXXX)
trap 'for m in $(grep -o " $top[^ ]*" /proc/mounts | sort -r); do umount -l $m; done; rm -rf $top' EXIT
mkdir -p $top/l $top/m
dd if=/dev/urandom of=$top/l/big bs=1M count=1024 status=none
ln $top/l/big $top/l/big2
cp -a /usr/local/go/src $top/l/src && cp -al $top/l/src $top/l/src2
echo "files in src: $(find $top/l/src -type f | wc -l)"
t() { local s=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $s" | bc; }
for c in "kernel:index=on,metacopy=on,redirect_dir=on" "kernel:" "$@"; do
	name=${c%%:*}; extra=${c#*:}
	rm -rf $top/u $top/w; mkdir $top/u $top/w
	o=lowerdir=$top/l,upperdir=$top/u,workdir=$top/w
	if [ "$name" = kernel ]; then mount -t overlay overlay -o $o${extra:+,$extra} $top/m
	else "$name" --driver=fuse -o $o $top/m; fi
	sync; echo 3 > /proc/sys/vm/drop_caches
	c1=$(t chmod 600 $top/m/big)
	sync; echo 3 > /proc/sys/vm/drop_caches
	c2=$(t rm -rf $top/m/src)
	used=$(du -sm $top/u $top/w | awk '{s+=$1} END {print s}')
	umount $top/m
	echo "$name ${extra:-defaults}: chmod-hl-1GiB ${c1}s  rm-rf-hl-tree ${c2}s  upper+work ${used} MiB"
done
