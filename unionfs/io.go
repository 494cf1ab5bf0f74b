package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// I/O without open handles.
//
// By default layerfs answers the first OPEN of a regular file with ENOSYS:
// the kernel then stops sending OPEN and RELEASE for files altogether
// (FUSE "no open" mode), which saves a round trip on every open of every
// file. Reads and writes then arrive without a handle and are served here
// by opening the entry's current top copy for the request. A consequence
// is that copy-up happens at the first write (or truncate) rather than at
// an open for writing, and that a reader opened before a copy-up sees the
// new data, as with kernel overlay.
//
// Files made by create or O_TMPFILE still get a handle (*file), and with
// the passthrough option every open does, so the kernel can do the I/O.

var (
	_ fs.NodeReader    = (*node)(nil)
	_ fs.NodeWriter    = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeLseeker   = (*node)(nil)
	_ fs.NodeAllocater = (*node)(nil)
	_ fs.NodeIoctler   = (*node)(nil)
)

// openTop opens the entry's top copy for one request. Callers hold
// renameMu for reading.
func (n *node) openTop(flags int) (int, syscall.Errno) {
	dirfd, name, errno := n.loc()
	if errno != 0 {
		return -1, errno
	}
	if flags&unix.O_ACCMODE == unix.O_RDONLY && n.meta.Load() {
		if dirfd, name, errno = n.dataFile(); errno != 0 {
			return -1, errno
		}
	}
	var fd int
	var err error
	if name == "" {
		// No name left (unlinked while open, or O_TMPFILE): reopen the
		// descriptor the node kept.
		fd, err = unix.Open(procPath(dirfd, ""), flags|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	}
	return fd, fs.ToErrno(err)
}

// withTop runs fn on a descriptor of the top copy; write copies up first.
func (n *node) withTop(ctx context.Context, write bool, fn func(fd int) syscall.Errno) syscall.Errno {
	if write && !n.u.writable() {
		return syscall.EROFS
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	flags := unix.O_RDONLY
	if write {
		if errno := n.copyUp(ctx, withData); errno != 0 {
			return errno
		}
		flags = unix.O_WRONLY
	}
	fd, errno := n.openTop(flags)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	return fn(fd)
}

func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if fh := asFile(f); fh != nil {
		return fh.Read(ctx, dest, off)
	}
	e := n.u.reads.get(n)
	if e == nil {
		n.u.renameMu.RLock()
		copies := n.copyups.Load()
		fd, errno := n.openTop(unix.O_RDONLY)
		n.u.renameMu.RUnlock()
		if errno != 0 {
			return nil, errno
		}
		e = n.u.reads.add(n, fd, copies)
	}
	defer n.u.reads.put(e)
	k, err := unix.Pread(e.fd, dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if fh := asFile(f); fh != nil {
		return fh.Write(ctx, data, off)
	}
	var written int
	errno := n.withTop(ctx, true, func(fd int) syscall.Errno {
		var err error
		written, err = unix.Pwrite(fd, data, off)
		return fs.ToErrno(err)
	})
	return uint32(written), errno
}

func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if !n.u.fsync {
		return 0 // fsync=0 or volatile: syncs are skipped on purpose
	}
	if fh := asFile(f); fh != nil {
		return fh.Fsync(ctx, flags)
	}
	if !n.inUpper() {
		return 0 // nothing of ours to flush
	}
	return n.withTop(ctx, false, func(fd int) syscall.Errno {
		return fs.ToErrno(unix.Fsync(fd))
	})
}

func (n *node) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if fh := asFile(f); fh != nil {
		return fh.Lseek(ctx, off, whence)
	}
	var pos int64
	errno := n.withTop(ctx, false, func(fd int) syscall.Errno {
		var err error
		pos, err = unix.Seek(fd, int64(off), int(whence))
		return fs.ToErrno(err)
	})
	return uint64(pos), errno
}

func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if fh := asFile(f); fh != nil {
		return fh.Allocate(ctx, off, size, mode)
	}
	return n.withTop(ctx, true, func(fd int) syscall.Errno {
		return fs.ToErrno(unix.Fallocate(fd, mode, int64(off), int64(size)))
	})
}

// Ioctl refuses everything: passing ioctls to a layer file could change a
// lower layer (file flags, reflinks). ENOTTY is what tools like fsx expect.
func (n *node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

// keepForOpeners gives a node that is about to lose its last name a
// descriptor of its own, so processes that still have it open can go on
// reading and writing it (without open handles there is no other way back
// to an unlinked file). Callers hold renameMu.
func (n *node) keepForOpeners() {
	// Only regular files are read and written through us: the kernel
	// serves fifos and devices itself, and opening one could block or
	// have effects.
	if n.dir || n.anonFd() >= 0 || n.Mode()&unix.S_IFMT != unix.S_IFREG {
		return
	}
	// A lower file is only ever opened for reading.
	fd, errno := -1, syscall.Errno(syscall.EROFS)
	if n.inUpper() {
		fd, errno = n.openTop(unix.O_RDWR)
	}
	if errno != 0 {
		fd, errno = n.openTop(unix.O_RDONLY)
	}
	if errno != 0 {
		fd, errno = n.openTop(unix.O_PATH)
	}
	if errno == 0 {
		n.u.hold(fd)
		n.anon.Store(int32(fd))
	}
}

// asFile returns the handle behind f, or nil for a request without one.
func asFile(f fs.FileHandle) *file {
	switch h := f.(type) {
	case *file:
		return h
	case *ptFile:
		return h.file
	}
	return nil
}

// dataFile locates a metacopy file's data: the same name in the parent's
// data layer, or the descriptor find kept (name ""). EIO where find found
// none, as the kernel answers then.
func (n *node) dataFile() (int, string, syscall.Errno) {
	if fd := n.dataFd.Load(); fd > 0 {
		return int(fd), "", 0
	}
	layer := n.dataLayer.Load()
	name, p, errno := n.parentNode()
	if errno != 0 {
		return -1, "", errno
	}
	if fd := p.fdOf(int(layer)); layer > 0 && fd >= 0 {
		return fd, name, 0
	}
	return -1, "", syscall.EIO
}

// openAt opens name in dirfd without following a symlink, or, for name
// "", reopens the O_PATH descriptor dirfd itself.
func openAt(dirfd int, name string, flags int) (int, error) {
	if name == "" {
		return unix.Open(procPath(dirfd, ""), flags|unix.O_CLOEXEC, 0)
	}
	return unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}
