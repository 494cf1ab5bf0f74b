package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

var (
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
)

// xattrTarget returns a /proc path for the entry's top copy and whether the
// path must be followed (a directory's own fd) or not (a name in a
// directory, which may be a symlink).
func (n *node) xattrTarget() (string, bool, syscall.Errno) {
	fd, name, errno := n.loc()
	if errno != 0 {
		return "", false, errno
	}
	return procPath(fd, name), name == "", 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if whiteout.IsPrivateXattr(attr) {
		return 0, syscall.ENODATA
	}
	if attr == StatusXattr && n.IsRoot() {
		b := n.u.status()
		if len(dest) == 0 {
			return uint32(len(b)), 0
		}
		if len(dest) < len(b) {
			return uint32(len(b)), syscall.ERANGE
		}
		return uint32(copy(dest, b)), 0
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	p, follow, errno := n.xattrTarget()
	if errno != 0 {
		return 0, errno
	}
	var sz int
	var err error
	if follow {
		sz, err = unix.Getxattr(p, attr, dest)
	} else {
		sz, err = unix.Lgetxattr(p, attr, dest)
	}
	return uint32(sz), fs.ToErrno(err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	p, follow, errno := n.xattrTarget()
	if errno != 0 {
		return 0, errno
	}
	if follow {
		p += "/." // list the directory itself, not the /proc link
	}
	names, err := copyup.ListXattrs(p)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	var buf []byte
	for _, name := range names {
		if !whiteout.IsPrivateXattr(name) {
			buf = append(append(buf, name...), 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(buf)), 0
	}
	if len(dest) < len(buf) {
		return 0, syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.changeXattr(ctx, attr, func(p string, follow bool) error {
		if follow {
			return unix.Setxattr(p, attr, data, int(flags))
		}
		return unix.Lsetxattr(p, attr, data, int(flags))
	})
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !n.inUpper() && !whiteout.IsPrivateXattr(attr) {
		// As the kernel: no copy-up to remove what is not there.
		if _, errno := n.Getxattr(ctx, attr, nil); errno != 0 {
			return errno
		}
	}
	return n.changeXattr(ctx, attr, func(p string, follow bool) error {
		if follow {
			return unix.Removexattr(p, attr)
		}
		return unix.Lremovexattr(p, attr)
	})
}

func (n *node) changeXattr(ctx context.Context, attr string, change func(p string, follow bool) error) syscall.Errno {
	if whiteout.IsPrivateXattr(attr) || attr == StatusXattr && n.IsRoot() {
		return syscall.EPERM
	}
	if !n.u.writable() {
		return syscall.EROFS
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	if errno := n.copyUp(ctx, metaOnly); errno != 0 {
		return errno
	}
	p, follow, errno := n.xattrTarget()
	if errno != 0 {
		return errno
	}
	return fs.ToErrno(change(p, follow))
}
