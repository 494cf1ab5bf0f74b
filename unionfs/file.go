package unionfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// file is an open file of the union. It deliberately does not offer a
// passthrough fd: the kernel shares a backing file per inode, and a
// read-only lower backing file must never serve a later write.
type file struct {
	node     *node
	writable bool

	mu     sync.Mutex // guards fd, layer and copies when reopening
	fd     int
	layer  int
	copies uint64
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileLseeker   = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

func newFile(n *node, fd int, flags uint32, layer int, copies uint64) *file {
	return &file{
		node:     n,
		writable: flags&syscall.O_ACCMODE != syscall.O_RDONLY,
		fd:       fd,
		layer:    layer,
		copies:   copies,
	}
}

// current returns the fd to use. A read-only handle opened on a lower file
// follows the entry to its upper copy once it has been copied up, as
// kernel overlay does, so a reader sees writes made after its open.
func (f *file) current() int {
	if f.writable || f.layer == upperLayer || f.node.home().copies == f.copies {
		return f.fd
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.layer == upperLayer {
		return f.fd
	}
	n := f.node
	n.u.renameMu.RLock()
	l, errno := n.loc()
	fd := -1
	if errno == 0 {
		fd, _ = at.Open(l, unix.O_RDONLY)
	}
	n.u.renameMu.RUnlock()
	if fd < 0 {
		return f.fd
	}
	// Keep the old descriptor number valid for locks: dup the new file
	// over it.
	if err := unix.Dup3(fd, f.fd, unix.O_CLOEXEC); err == nil {
		f.layer = upperLayer
		f.copies = n.home().copies
	}
	unix.Close(fd)
	return f.fd
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	// Spliced from the layer file where the kernel allows it.
	return fuse.ReadResultFd(uintptr(f.current()), off, len(buf)), 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := unix.Pwrite(f.fd, data, off)
	return uint32(n), fs.ToErrno(err)
}

// getattr answers from the open descriptor; done is false when the node
// should be asked instead (a lower handle whose entry was copied up).
func (f *file) getattr(out *fuse.AttrOut) (syscall.Errno, bool) {
	var x unix.Statx_t
	if err := at.Statx(at.Loc{Dir: f.current()}, &x); err != nil {
		return fs.ToErrno(err), true
	}
	f.node.u.fillAttr(&out.Attr, &x, false)
	return 0, true
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(unix.Close(f.fd))
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if flags&1 != 0 { // FUSE_FSYNC_FDATASYNC
		return fs.ToErrno(unix.Fdatasync(f.fd))
	}
	return fs.ToErrno(unix.Fsync(f.fd))
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(f.current(), int64(off), int(whence))
	return uint64(n), fs.ToErrno(err)
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return fs.ToErrno(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

// ptFile is an open handle whose I/O the kernel does itself on the layer
// file (FUSE passthrough, passthrough option, root only).
type ptFile struct {
	*file
	lower bool // backed by a lower file: counted in node.lowerPT
}

var _ fs.FilePassthroughFder = (*ptFile)(nil)

func (f *ptFile) PassthroughFd() (int, bool) { return f.fd, true }

func (f *ptFile) Release(ctx context.Context) syscall.Errno {
	f.node.u.stats.openHandles.Add(-1)
	if f.lower {
		f.node.lowerPT.Add(-1)
	}
	return f.file.Release(ctx)
}

// handle wraps a handle of an upper file for the mount's I/O mode: with
// passthrough every handle of an inode must offer its backing file.
//
// Without passthrough the mount runs in no-open mode, where the kernel
// never sends RELEASE, not even for files made by CREATE: a handle would
// leak its descriptor (and the space of a deleted file). So create hands
// out none, and I/O goes through the node like for every other file.
func (u *union) handle(f *file) fs.FileHandle {
	if u.passthrough {
		u.stats.openHandles.Add(1)
		return &ptFile{file: f}
	}
	unix.Close(f.fd)
	return nil
}
