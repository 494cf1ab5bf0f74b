package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// copyMode says how much of an entry a copy-up takes to the upper layer.
type copyMode int

const (
	withData copyMode = iota // everything
	noData                   // a regular file's data is about to go (O_TRUNC)
	metaOnly                 // metadata; a regular file's data stays below (metacopy)
)

// setattrCopy is the copy-up a setattr needs: none of the data to
// truncate to 0, all of it to truncate elsewhere, else metadata only.
func setattrCopy(hasSize bool, size uint64) copyMode {
	switch {
	case hasSize && size == 0:
		return noData
	case hasSize:
		return withData
	}
	return metaOnly
}

// openCopy is the copy-up an open for writing needs.
func openCopy(flags uint32) copyMode {
	if flags&syscall.O_TRUNC != 0 {
		return noData
	}
	return withData
}

// copyUp makes sure the entry has a copy in the upper layer, copying its
// parents first, with as much of its data as how asks for; a metacopy
// entry gets its data when a later copy-up asks for it. Callers hold
// renameMu (read or write).
func (n *node) copyUp(ctx context.Context, how copyMode) syscall.Errno {
	if !n.u.writable() {
		return syscall.EROFS
	}
	if n.inUpper() {
		if how != metaOnly && n.meta.Load() {
			return n.copyUpData(how == noData)
		}
		return 0
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		return errno
	}
	// A file with several names goes to the index (index.go).
	if !n.dir && n.u.index >= 0 && n.hasLinks(p, name) {
		if errno := n.copyUpIndex(ctx, p, name, how); errno != syscall.ENOTSUP {
			return errno
		}
	}
	if errno := p.copyUp(ctx, withData); errno != 0 {
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
		NoData:    how == noData,
		Fsync:     n.u.fsync,
		SkipXattr: whiteout.IsPrivateXattr,
		KeepOwner: n.u.chownNew,
	}
	// The origin record keeps st_ino (and readdir's d_ino) the lower
	// file's, across remounts. A lower hard link reaches this point only
	// without the index (index=off, or a layer without file handles):
	// then its copy is a file of its own and gets no origin, since the
	// copies of its several names would all claim one identity. After a
	// remount it reports its own inode number, as kernel overlay with
	// index=off; within the mount its node keeps the number it had,
	// because a new kernel inode would split the page cache between the
	// names and files already open.
	var sst unix.Stat_t
	hardlinked := !n.dir && unix.Fstatat(src.Dir, src.Name, &sst, unix.AT_SYMLINK_NOFOLLOW) == nil && sst.Nlink > 1
	opt.SetXattrs = map[string][]byte{}
	if origin := encodeOrigin(src.Dir, src.Name); origin != nil && !hardlinked {
		opt.SetXattrs[n.u.ns.Name("origin")] = origin
	}
	// Metadata only where the kernel format allows it (trusted xattrs:
	// a userxattr kernel mount follows no metacopy) and the file is one
	// of its own with data to leave behind.
	srcLayer := n.topLayer()
	if how == metaOnly && n.u.metacopy && !n.dir && !hardlinked && sst.Mode&unix.S_IFMT == unix.S_IFREG && sst.Size > 0 {
		opt.Metacopy = true
		opt.SetXattrs[n.u.ns.Name("metacopy")] = []byte{}
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
	if cst.Mode&unix.S_IFMT == unix.S_IFREG && !opt.Metacopy && !opt.NoData {
		n.u.stats.copyUpBytes.Add(uint64(cst.Size))
	}
	if opt.Metacopy {
		n.dataLayer.Store(int32(srcLayer))
		n.meta.Store(true)
	}
	p.markImpure()
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

// markImpure records on the directory's upper copy that it holds entries
// copied up (or moved in) whose inode numbers come from elsewhere, as the
// kernel does, so readdir knows where to look for origins. The node
// remembers it, so a copy-up pays no syscall for it after the first.
func (d *node) markImpure() {
	if d.impure.Load() {
		return
	}
	if fd := d.fdOf(upperLayer); fd >= 0 {
		d.u.markImpure(fd)
		d.impure.Store(true)
	}
}

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

// copyUpData gives a metacopy file its data: copied from the lower file
// into the upper one in place (or dropped, for a truncate to 0), then the
// metacopy mark goes. Until the mark is gone the data is read from below,
// so a crash half way loses nothing. The write must not show as a change:
// times and mode are put back.
func (n *node) copyUpData(truncate bool) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.meta.Load() {
		return 0
	}
	dirfd, name, errno := n.loc()
	if errno != 0 {
		return errno
	}
	out, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(out)
	var st unix.Stat_t
	if err := unix.Fstat(out, &st); err != nil {
		return fs.ToErrno(err)
	}
	if truncate {
		err = unix.Ftruncate(out, 0)
	} else {
		dfd, dname, errno := n.dataFile()
		if errno != 0 {
			return errno
		}
		in, oerr := openAt(dfd, dname, unix.O_RDONLY)
		if oerr != nil {
			return fs.ToErrno(oerr)
		}
		err = copyup.CopyData(in, out, st.Size)
		unix.Close(in)
		n.u.stats.copyUpBytes.Add(uint64(st.Size))
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	self := procPath(out, "")
	unix.Chmod(self, st.Mode&^unix.S_IFMT)
	unix.UtimesNanoAt(unix.AT_FDCWD, self, []unix.Timespec{st.Atim, st.Mtim}, 0)
	if n.u.fsync {
		if err := unix.Fsync(out); err != nil {
			return fs.ToErrno(err)
		}
	}
	unix.Fremovexattr(out, whiteout.TrustedPrefix+"metacopy")
	n.meta.Store(false)
	n.copyups.Add(1)
	return 0
}
