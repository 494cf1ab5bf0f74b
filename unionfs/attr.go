package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// stat reads the attributes of the entry's top copy.
// Preconditions: renameMu held.
func (n *node) stat(x *unix.Statx_t) syscall.Errno {
	l, errno := n.loc()
	if errno != 0 {
		return errno
	}
	if err := at.Statx(l, x); err != nil {
		return fs.ToErrno(err)
	}
	if h := n.home().index; h != "" {
		x.Nlink = n.u.unionNlink(h, x.Nlink)
	}
	return 0
}

// getattr fills out from the top copy. Preconditions: renameMu held.
func (n *node) getattr(out *fuse.AttrOut) syscall.Errno {
	var x unix.Statx_t
	if errno := n.stat(&x); errno != 0 {
		return errno
	}
	if n.home().meta {
		// As the kernel: a metacopy file's blocks are its data's.
		var dx unix.Statx_t
		if dl, errno := n.dataFile(); errno == 0 && at.Statx(dl, &dx) == nil {
			x.Blocks = dx.Blocks
		}
	}
	n.u.fillAttr(&out.Attr, &x, n.dir && n.merged())
	return 0
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fh := asFile(f); fh != nil {
		if errno, done := fh.getattr(out); done {
			return errno
		}
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	return n.getattr(out)
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if !n.u.writable() {
		return syscall.EROFS
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	size, hasSize := in.GetSize()
	if errno := n.copyUp(ctx, setattrCopy(hasSize, size)); errno != 0 {
		return errno
	}
	l, errno := n.loc()
	if errno != 0 {
		return errno
	}
	var dropSgid func()
	if _, chown := in.GetUID(); hasSize || chown || in.Valid&fuse.FATTR_GID != 0 {
		dropSgid = n.u.sgidDropper(ctx, l)
	}
	if errno := n.setOwner(l, in); errno != 0 {
		return errno
	}
	if mode, ok := in.GetMode(); ok {
		if n.Mode()&unix.S_IFMT == unix.S_IFLNK {
			return syscall.EOPNOTSUPP // never follow a symlink of a layer
		}
		if err := at.Chmod(l, mode); err != nil {
			return fs.ToErrno(err)
		}
	}
	if hasSize {
		if errno := n.truncate(f, l, int64(size)); errno != 0 {
			return errno
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		if err := at.Utimes(l, setattrTimes(in)); err != nil {
			return fs.ToErrno(err)
		}
	}
	if dropSgid != nil {
		dropSgid()
	}
	// go-fuse leaves a SETATTR reply as we make it: the inode number
	// the node is known by, and a validity, without which the next stat
	// would ask again.
	errno = n.getattr(out)
	out.Ino = n.StableAttr().Ino
	out.SetTimeout(n.u.attrTimeout)
	return errno
}

// setOwner applies the uid and gid of a SETATTR, mapped to the layers.
func (n *node) setOwner(l at.Loc, in *fuse.SetAttrIn) syscall.Errno {
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if !uok && !gok {
		return 0
	}
	u, g := -1, -1
	if uok {
		u = int(uid)
	}
	if gok {
		g = int(gid)
	}
	u, g, errno := n.u.ids.store(u, g)
	if errno != 0 {
		return errno
	}
	return fs.ToErrno(at.Chown(l, u, g))
}

// setattrTimes are the times a SETATTR sets (UTIME_OMIT for the others).
func setattrTimes(in *fuse.SetAttrIn) []unix.Timespec {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if in.Valid&fuse.FATTR_ATIME != 0 {
		ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
		}
	}
	if in.Valid&fuse.FATTR_MTIME != 0 {
		ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
		}
	}
	return ts
}

// truncate sets the size through the open handle when it writes the upper
// file, else through a fresh descriptor of l.
func (n *node) truncate(f fs.FileHandle, l at.Loc, size int64) syscall.Errno {
	if fh := asFile(f); fh != nil && fh.writable {
		return fs.ToErrno(unix.Ftruncate(fh.fd, size))
	}
	if n.dir {
		return syscall.EISDIR
	}
	fd, err := at.Open(l, unix.O_WRONLY|unix.O_NONBLOCK)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(fd)
	return fs.ToErrno(unix.Ftruncate(fd, size))
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	l, errno := n.loc()
	if errno != 0 {
		return nil, errno
	}
	target, err := at.Readlink(l)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return []byte(target), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	fd := n.u.roots[upperLayer]
	if fd < 0 {
		fd = n.u.roots[1]
	}
	var s unix.Statfs_t
	if err := unix.Fstatfs(fd, &s); err != nil {
		return fs.ToErrno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize = uint32(s.Bsize), uint32(s.Frsize)
	out.NameLen = uint32(n.u.nameMax)
	return 0
}
