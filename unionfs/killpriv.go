package unionfs

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// A write, truncate or chown by an unprivileged user clears the file's
// set-id bits. The kernel's FUSE module does it for us, but by the rule
// older kernels had: S_ISGID only where group execute is set. Today's
// kernel (setattr_should_drop_sgid) also drops S_ISGID without group
// execute when the user is outside the file's group; that part is done
// here, after the change.

// sgidDropper returns, for a change of the regular file l by the caller
// of ctx, what to run after it: clearing S_ISGID where the kernel would
// (an unprivileged caller outside the file's group, the file not
// group-executable; the FUSE module handles the other case), judged on
// the file as it is before the change. nil where nothing is to be done.
func (u *union) sgidDropper(ctx context.Context, l at.Loc) func() {
	return u.dropSgidOf(ctx, l, func(mode uint32) bool {
		return mode&unix.S_IFMT == unix.S_IFREG && mode&unix.S_IXGRP == 0
	})
}

// aclSgidDropper is sgidDropper for setting an access ACL, which drops
// S_ISGID of any entry set by an unprivileged caller outside its group
// (the kernel's posix_acl_update_mode; the upper filesystem, changed by
// the server as root, keeps it).
func (u *union) aclSgidDropper(ctx context.Context, l at.Loc) func() {
	return u.dropSgidOf(ctx, l, func(uint32) bool { return true })
}

func (u *union) dropSgidOf(ctx context.Context, l at.Loc, applies func(mode uint32) bool) func() {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Uid == 0 {
		return nil
	}
	var st unix.Stat_t
	if at.Stat(l, &st) != nil || st.Mode&unix.S_ISGID == 0 || !applies(st.Mode) {
		return nil
	}
	uid, gid := st.Uid, st.Gid
	u.ids.show(&uid, &gid) // the group as the mount shows it
	if inGroup(caller, gid) {
		return nil
	}
	return func() {
		var now unix.Stat_t
		if at.Stat(l, &now) == nil && now.Mode&unix.S_ISGID != 0 && now.Mode&unix.S_IFMT != unix.S_IFLNK {
			at.Chmod(l, now.Mode&07777&^unix.S_ISGID)
		}
	}
}

// inGroup reports whether the caller's primary or supplementary groups
// hold gid; where the supplementary groups cannot be read (a process
// outside our pid namespace), it says yes, which keeps the bit.
func inGroup(caller *fuse.Caller, gid uint32) bool {
	if caller.Gid == gid {
		return true
	}
	if caller.Pid == 0 {
		return true
	}
	f, err := os.Open("/proc/" + strconv.Itoa(int(caller.Pid)) + "/status")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		for _, g := range strings.Fields(rest) {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) == gid {
				return true
			}
		}
		return false
	}
	return true
}
