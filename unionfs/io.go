package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
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

// openTop opens the entry's top copy for one request (a metacopy file's
// data for reading). A nameless entry (unlinked while open, or
// O_TMPFILE) reopens the descriptor the node kept.
// Preconditions: renameMu held for reading.
func (n *node) openTop(flags int) (int, syscall.Errno) {
	l, errno := n.loc()
	if errno != 0 {
		return -1, errno
	}
	if flags&unix.O_ACCMODE == unix.O_RDONLY && n.home().meta {
		if l, errno = n.dataFile(); errno != 0 {
			return -1, errno
		}
	}
	if l.Name != "" {
		flags |= unix.O_NONBLOCK
	}
	fd, err := at.Open(l, flags)
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
		copies := n.home().copies
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
		drop := n.u.sgidDropper(ctx, at.Loc{Dir: fd})
		var err error
		written, err = unix.Pwrite(fd, data, off)
		if err == nil && drop != nil {
			drop()
		}
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
// to an unlinked file). Preconditions: renameMu and n.mu held.
func (n *node) keepForOpeners() {
	// Only regular files are read and written through us: the kernel
	// serves fifos and devices itself, and opening one could block or
	// have effects.
	if n.dir || n.home().anon > 0 || n.Mode()&unix.S_IFMT != unix.S_IFREG {
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
		n.move(func(h *home) { h.anon = fd })
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
// data layer, or the descriptor the lookup kept. EIO where the lookup
// found none, as the kernel answers then.
func (n *node) dataFile() (at.Loc, syscall.Errno) {
	h := n.home()
	if h.dataFd > 0 {
		return at.Loc{Dir: h.dataFd}, 0
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		return at.Loc{}, errno
	}
	if fd := p.fdOf(h.dataLayer); h.dataLayer > 0 && fd >= 0 {
		return at.Loc{Dir: fd, Name: name}, 0
	}
	return at.Loc{}, syscall.EIO
}

var _ fs.NodeFlusher = (*node)(nil)

// Flush answers ENOSYS so the kernel stops sending one per close: closing
// a layer file reports nothing that a local filesystem could fail, and
// POSIX locks are kept by the kernel (no lock support is offered).
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// writeIntent reports whether open flags need the upper copy.
func writeIntent(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.u.passthrough {
		return nil, 0, syscall.ENOSYS // no open handles: see io.go
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	write := writeIntent(flags)
	if write {
		if !n.u.writable() {
			return nil, 0, syscall.EROFS
		}
		if errno := n.copyUp(ctx, openCopy(flags)); errno != 0 {
			return nil, 0, errno
		}
	}
	// Decide under n.mu: copy-up takes it too, so a lower open counted
	// here either finished before the copy-up or sees the upper file.
	n.mu.Lock()
	if write && n.lowerPT.Load() > 0 {
		// The kernel binds one backing file to an inode, and readers
		// still use the lower file through this one. ESTALE makes the
		// kernel look the name up again, and the entry comes back with
		// a new generation: the writer gets a new inode backed by the
		// upper file, the readers keep theirs.
		n.u.supersede(n.StableAttr().Ino)
		n.superseded.Store(true)
		n.mu.Unlock()
		return nil, 0, syscall.ESTALE
	}
	l, errno := n.loc()
	if errno != 0 {
		n.mu.Unlock()
		return nil, 0, errno
	}
	layer, copies := n.topLayer(), n.home().copies
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY
	var rfd int
	var err error
	if n.home().meta && !write {
		// The backing file of a metacopy file is its lower data.
		dl, errno := n.dataFile()
		if errno != 0 {
			n.mu.Unlock()
			return nil, 0, errno
		}
		layer = 1 // a lower file: see lowerPT
		rfd, err = at.Open(dl, int(flags))
	} else {
		rfd, err = at.Open(l, int(flags))
	}
	if err != nil {
		n.mu.Unlock()
		return nil, 0, fs.ToErrno(err)
	}
	h := &ptFile{file: newFile(n, rfd, flags, layer, copies)}
	n.u.stats.openHandles.Add(1)
	if layer != upperLayer {
		n.lowerPT.Add(1)
		h.lower = true
	}
	n.mu.Unlock()
	return h, fuse.FOPEN_KEEP_CACHE, 0
}
