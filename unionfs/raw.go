package unionfs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// rawFS is go-fuse's bridge to the node tree, with what the node API does
// not carry or show:
//   - the caller's umask on creation. With POSIX ACLs the kernel leaves
//     the umask to the filesystem (FUSE_DONT_MASK), which must ignore it
//     under a default ACL and apply it elsewhere; go-fuse passes the mode
//     alone, so the umask travels in the mode's unused high bits
//     (withUmask, splitUmask);
//   - a count of the requests the kernel sends, by kind (requests), which
//     layerfs inspect and the benchmark show.
type rawFS struct {
	fuse.RawFileSystem
	reqs *requests
	// dirs serves READDIR without OPENDIR (dirreads.go); nil keeps
	// OPENDIR.
	dirs *dirReads
}

// umaskShift places the umask above the file type bits (S_IFMT ends at
// bit 15).
const umaskShift = 16

func withUmask(mode, umask uint32) uint32 { return mode | (umask&07777)<<umaskShift }

// splitUmask undoes withUmask.
func splitUmask(mode uint32) (uint32, uint32) {
	return mode & (1<<umaskShift - 1), mode >> umaskShift & 07777
}

// requests counts the kernel's requests by kind.
type requests [opCount]atomic.Uint64

type reqKind int

const (
	opLookup reqKind = iota
	opForget
	opGetAttr
	opSetAttr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetXAttr
	opListXAttr
	opSetXAttr
	opRemoveXAttr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetLk
	opSetLk
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpenDir
	opReadDir
	opReadDirPlus
	opReleaseDir
	opFsyncDir
	opStatFs
	opStatx
	opCount
)

// opNames are the kernel's names of the requests (fuse_opcode).
var opNames = [opCount]string{
	"LOOKUP", "FORGET", "GETATTR", "SETATTR", "MKNOD", "MKDIR", "UNLINK", "RMDIR",
	"RENAME", "LINK", "SYMLINK", "READLINK", "ACCESS", "GETXATTR", "LISTXATTR",
	"SETXATTR", "REMOVEXATTR", "CREATE", "TMPFILE", "OPEN", "READ", "LSEEK",
	"GETLK", "SETLK", "RELEASE", "WRITE", "COPY_FILE_RANGE", "IOCTL", "FLUSH",
	"FSYNC", "FALLOCATE", "OPENDIR", "READDIR", "READDIRPLUS", "RELEASEDIR",
	"FSYNCDIR", "STATFS", "STATX",
}

func (r *requests) count(o reqKind) { r[o].Add(1) }

// snapshot returns the counts that are not zero, by name.
func (r *requests) snapshot() map[string]uint64 {
	m := map[string]uint64{}
	for o := range r {
		if n := r[o].Load(); n > 0 {
			m[opNames[o]] = n
		}
	}
	return m
}

func (r rawFS) Init(s *fuse.Server) {
	if r.dirs != nil {
		r.dirs.server = s
	}
	r.RawFileSystem.Init(s)
}

func (r rawFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	r.reqs.count(opLookup)
	return r.RawFileSystem.Lookup(c, h, name, out)
}

func (r rawFS) Forget(nodeid, nlookup uint64) {
	r.reqs.count(opForget)
	if r.dirs != nil {
		r.dirs.forget(r.RawFileSystem, nodeid)
	}
	r.RawFileSystem.Forget(nodeid, nlookup)
}

func (r rawFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	r.reqs.count(opGetAttr)
	return r.RawFileSystem.GetAttr(c, in, out)
}

func (r rawFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	r.reqs.count(opSetAttr)
	return r.RawFileSystem.SetAttr(c, in, out)
}

func (r rawFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	r.reqs.count(opMknod)
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Mknod(c, in, name, out)
}

func (r rawFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	r.reqs.count(opMkdir)
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Mkdir(c, in, name, out)
}

func (r rawFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	r.reqs.count(opUnlink)
	return r.RawFileSystem.Unlink(c, h, name)
}

func (r rawFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	r.reqs.count(opRmdir)
	return r.RawFileSystem.Rmdir(c, h, name)
}

func (r rawFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	r.reqs.count(opRename)
	return r.RawFileSystem.Rename(c, in, oldName, newName)
}

func (r rawFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	r.reqs.count(opLink)
	return r.RawFileSystem.Link(c, in, name, out)
}

func (r rawFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	r.reqs.count(opSymlink)
	return r.RawFileSystem.Symlink(c, h, target, name, out)
}

func (r rawFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	r.reqs.count(opReadlink)
	return r.RawFileSystem.Readlink(c, h)
}

func (r rawFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	r.reqs.count(opAccess)
	return r.RawFileSystem.Access(c, in)
}

func (r rawFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	r.reqs.count(opGetXAttr)
	return r.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (r rawFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	r.reqs.count(opListXAttr)
	return r.RawFileSystem.ListXAttr(c, h, dest)
}

func (r rawFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	r.reqs.count(opSetXAttr)
	return r.RawFileSystem.SetXAttr(c, in, attr, data)
}

func (r rawFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	r.reqs.count(opRemoveXAttr)
	return r.RawFileSystem.RemoveXAttr(c, h, attr)
}

func (r rawFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	r.reqs.count(opCreate)
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Create(c, in, name, out)
}

func (r rawFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	r.reqs.count(opTmpfile)
	in.Mode = withUmask(in.Mode, in.Umask)
	return r.RawFileSystem.Tmpfile(c, in, out)
}

func (r rawFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.reqs.count(opOpen)
	return r.RawFileSystem.Open(c, in, out)
}

func (r rawFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	r.reqs.count(opRead)
	return r.RawFileSystem.Read(c, in, buf)
}

func (r rawFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	r.reqs.count(opLseek)
	return r.RawFileSystem.Lseek(c, in, out)
}

func (r rawFS) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	r.reqs.count(opGetLk)
	return r.RawFileSystem.GetLk(c, in, out)
}

func (r rawFS) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	r.reqs.count(opSetLk)
	return r.RawFileSystem.SetLk(c, in)
}

func (r rawFS) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	r.reqs.count(opSetLk)
	return r.RawFileSystem.SetLkw(c, in)
}

func (r rawFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	r.reqs.count(opRelease)
	r.RawFileSystem.Release(c, in)
}

func (r rawFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	r.reqs.count(opWrite)
	return r.RawFileSystem.Write(c, in, data)
}

func (r rawFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	r.reqs.count(opWrite)
	return r.RawFileSystem.Writev(c, in, data)
}

func (r rawFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	r.reqs.count(opCopyFileRange)
	return r.RawFileSystem.CopyFileRange(c, in)
}

func (r rawFS) Ioctl(c <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	r.reqs.count(opIoctl)
	return r.RawFileSystem.Ioctl(c, in, inbuf, out, outbuf)
}

func (r rawFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	r.reqs.count(opFlush)
	return r.RawFileSystem.Flush(c, in)
}

func (r rawFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	r.reqs.count(opFsync)
	return r.RawFileSystem.Fsync(c, in)
}

func (r rawFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	r.reqs.count(opFallocate)
	return r.RawFileSystem.Fallocate(c, in)
}

func (r rawFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	r.reqs.count(opOpenDir)
	if r.dirs.on() {
		return fuse.ENOSYS // see dirreads.go
	}
	return r.RawFileSystem.OpenDir(c, in, out)
}

func (r rawFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	r.reqs.count(opReadDir)
	if r.dirs != nil && in.Fh == 0 {
		return r.dirs.read(r.RawFileSystem, c, in, out, r.RawFileSystem.ReadDir)
	}
	return r.RawFileSystem.ReadDir(c, in, out)
}

func (r rawFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	r.reqs.count(opReadDirPlus)
	if r.dirs != nil && in.Fh == 0 {
		return r.dirs.read(r.RawFileSystem, c, in, out, r.RawFileSystem.ReadDirPlus)
	}
	return r.RawFileSystem.ReadDirPlus(c, in, out)
}

func (r rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	r.reqs.count(opReleaseDir)
	r.RawFileSystem.ReleaseDir(in)
}

func (r rawFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	r.reqs.count(opFsyncDir)
	return r.RawFileSystem.FsyncDir(c, in)
}

func (r rawFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	r.reqs.count(opStatFs)
	return r.RawFileSystem.StatFs(c, h, out)
}

func (r rawFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	r.reqs.count(opStatx)
	return r.RawFileSystem.Statx(c, in, out)
}
