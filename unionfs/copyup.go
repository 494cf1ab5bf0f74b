package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// copyUp makes sure the entry has a copy in the upper layer, copying its
// parents first. noData leaves a regular file empty (O_TRUNC, truncate to
// 0). Callers hold renameMu (read or write).
func (n *node) copyUp(ctx context.Context, noData bool) syscall.Errno {
	if !n.u.writable() {
		return syscall.EROFS
	}
	if n.inUpper() {
		return 0
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		return errno
	}
	if errno := p.copyUp(ctx, false); errno != 0 {
		return errno
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inUpper() {
		return 0
	}
	src := copyup.Loc{Dir: p.fdOf(n.topLayer()), Name: name}
	dst := copyup.Loc{Dir: p.fdOf(upperLayer), Name: name}
	if src.Dir < 0 || dst.Dir < 0 {
		return syscall.EIO
	}
	opt := copyup.Options{
		NoData:    noData,
		Fsync:     n.u.fsync,
		SkipXattr: whiteout.IsPrivateXattr,
		KeepOwner: n.u.chownNew,
	}
	// The origin record keeps st_ino (and readdir's d_ino) the lower
	// file's, across remounts. Not for one name of a lower hard link:
	// the copies of its several names would all claim one identity. It
	// is a file of its own and, after a remount, reports its own inode
	// number as with kernel overlay without index; within the mount its
	// node keeps the number it had, because a new kernel inode would
	// split the page cache between the names and files already open.
	var sst unix.Stat_t
	hardlinked := !n.dir && unix.Fstatat(src.Dir, src.Name, &sst, unix.AT_SYMLINK_NOFOLLOW) == nil && sst.Nlink > 1
	if origin := encodeOrigin(src.Dir, src.Name); origin != nil && !hardlinked {
		opt.SetXattrs = map[string][]byte{n.u.ns.Name("origin"): origin}
	}
	// A copy-up is no change the user made: the upper parent keeps its
	// times, as with kernel overlay.
	var pst unix.Stat_t
	keepTimes := unix.Fstat(dst.Dir, &pst) == nil
	// A whiteout form in the upper dir cannot exist for a name that is
	// shown from a lower layer, so the destination is free.
	cst, err := copyup.Entry(src, dst, n.u.work, opt)
	if err != nil {
		return fs.ToErrno(err)
	}
	n.u.stats.copyUps.Add(1)
	if cst.Mode&unix.S_IFMT == unix.S_IFREG {
		n.u.stats.copyUpBytes.Add(uint64(cst.Size))
	}
	n.u.markImpure(dst.Dir)
	if keepTimes {
		unix.UtimesNanoAt(unix.AT_FDCWD, procPath(dst.Dir, ""), []unix.Timespec{pst.Atim, pst.Mtim}, 0)
	}
	if n.dir {
		fd, err := unix.Openat(dst.Dir, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		n.u.hold(fd)
		dirs := append([]layerDir{{layer: upperLayer, fd: fd}}, n.layerDirs()...)
		n.dirs.Store(&dirs)
	} else {
		n.layer.Store(upperLayer)
	}
	n.copyups.Add(1)
	return 0
}

// markImpure records on an upper directory that it holds entries copied
// up (or moved in) whose inode numbers come from elsewhere, as the kernel
// does, so readdir knows where to look for origins.
func (u *union) markImpure(dirfd int) {
	if !u.isImpure(dirfd) {
		unix.Setxattr(procPath(dirfd, ""), u.ns.Name("impure"), []byte("y"), 0)
	}
}

func (u *union) isImpure(dirfd int) bool {
	var b [1]byte
	_, err := unix.Getxattr(procPath(dirfd, ""), u.ns.Name("impure"), b[:])
	return err == nil
}
