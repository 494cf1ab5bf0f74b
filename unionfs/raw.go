package unionfs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS is go-fuse's bridge to the node tree, with what the node API does
// not carry: the caller's umask on creation. With POSIX ACLs the kernel
// leaves the umask to the filesystem (FUSE_DONT_MASK), which must ignore
// it under a default ACL and apply it elsewhere; go-fuse passes the mode
// alone, so the umask travels in the mode's unused high bits
// (withUmask, splitUmask).
type rawFS struct {
	fuse.RawFileSystem
}

// umaskShift places the umask above the file type bits (S_IFMT ends at
// bit 15).
const umaskShift = 16

func withUmask(mode, umask uint32) uint32 { return mode | (umask&07777)<<umaskShift }

// splitUmask undoes withUmask.
func splitUmask(mode uint32) (uint32, uint32) {
	return mode & (1<<umaskShift - 1), mode >> umaskShift & 07777
}

func (r rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (r rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Mknod(cancel, in, name, out)
}

func (r rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Create(cancel, in, name, out)
}

func (r rawFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Tmpfile(cancel, in, out)
}
