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

// With FUSE_HANDLE_KILLPRIV_V2 (negotiated where files get no open
// handles: see fuseOptions) the kernel leaves clearing the set-id bits to
// the server and says when: a write or a truncate (SETATTR of the size,
// an open with O_TRUNC) by a caller without CAP_FSETID, and every chown
// of a file. It then asks no GETATTR before a chown and probes
// security.capability once per inode instead of before every write
// (SB_NOSEC). The capabilities need nothing from us: the upper
// filesystem drops them itself when the server writes, truncates or
// chowns.

// killSuidgid clears, after a change the kernel flagged, the set-id bits
// of the regular file h names as the kernel's should_remove_suid would:
// S_ISUID, and S_ISGID where group execute is set (the other S_ISGID case
// is sgidDropper's). It goes through the node tree as root. The kernel
// keeps the mode it cached across a write or an open: where the mode
// changed, it is told to ask again.
func (r rawFS) killSuidgid(c <-chan struct{}, h fuse.InHeader, refresh bool) {
	h.Caller = fuse.Caller{}
	var a fuse.AttrOut
	if r.RawFileSystem.GetAttr(c, &fuse.GetAttrIn{InHeader: h}, &a) != fuse.OK || a.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	kill := a.Mode & unix.S_ISUID
	if a.Mode&unix.S_IXGRP != 0 {
		kill |= a.Mode & unix.S_ISGID
	}
	if kill == 0 {
		return
	}
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: h, Valid: fuse.FATTR_MODE, Mode: a.Mode & 07777 &^ kill}}
	if r.RawFileSystem.SetAttr(c, &in, &a) == fuse.OK && refresh && r.conn.Server != nil {
		// Attributes only (offset < 0): no page cache lock is taken,
		// so this may run while the kernel waits for the reply.
		r.conn.InodeNotify(h.NodeId, -1, 0)
	}
}
