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
	if origin := encodeOrigin(src.Dir, src.Name); origin != nil {
		opt.SetXattrs = map[string][]byte{n.u.ns.Name("origin"): origin}
	}
	// A whiteout form in the upper dir cannot exist for a name that is
	// shown from a lower layer, so the destination is free.
	if _, err := copyup.Entry(src, dst, n.u.work, opt); err != nil {
		return fs.ToErrno(err)
	}
	if n.dir {
		fd, err := unix.Openat(dst.Dir, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		dirs := append([]layerDir{{layer: upperLayer, fd: fd}}, n.layerDirs()...)
		n.dirs.Store(&dirs)
	} else {
		n.layer.Store(upperLayer)
	}
	n.copyups.Add(1)
	return 0
}
