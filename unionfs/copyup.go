package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// xattrCaps holds a file's capabilities.
const xattrCaps = "security.capability"

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
// entry gets its data when a later copy-up asks for it.
// Preconditions: renameMu held (read or write), n.mu not held.
func (n *node) copyUp(ctx context.Context, how copyMode) syscall.Errno {
	if !n.u.writable() {
		return syscall.EROFS
	}
	if n.inUpper() {
		if how != metaOnly && n.home().meta {
			return n.copyUpData(how == noData)
		}
		return 0
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		return errno
	}
	if errno := p.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inUpper() {
		return 0
	}
	op, errno := n.prepareCopyUp(p, name, how)
	if errno != 0 {
		return errno
	}
	// A file with several names goes to the index (index.go).
	if op.hardlinked && op.st.Mode&unix.S_IFMT == unix.S_IFREG && n.u.index >= 0 {
		if errno := op.toIndex(ctx); errno != syscall.ENOTSUP {
			return errno
		}
	}
	return op.plain()
}

// copyUpOp is one copy-up, filled once before anything is written.
type copyUpOp struct {
	n, parent *node
	name      string
	how       copyMode
	src, dst  at.Loc
	// st is the source, as copied; hardlinked: a non-directory with
	// several names; origin its file handle record (nil where the layer
	// has no file handles).
	st         unix.Stat_t
	hardlinked bool
	origin     []byte
	// data is where the data is read from when the source holds
	// metadata only (a metacopy file of a lower layer).
	data *at.Loc
}

// prepareCopyUp fills a copy-up of n, found at name in its parent p
// (already in the upper layer). Preconditions: n.mu held.
func (n *node) prepareCopyUp(p *node, name string, how copyMode) (*copyUpOp, syscall.Errno) {
	op := &copyUpOp{n: n, parent: p, name: name, how: how,
		src: at.Loc{Dir: p.fdOf(n.topLayer()), Name: name},
		dst: at.Loc{Dir: p.fdOf(upperLayer), Name: name},
	}
	if op.src.Dir < 0 || op.dst.Dir < 0 {
		return nil, syscall.EIO
	}
	if err := at.Stat(op.src, &op.st); err != nil {
		return nil, fs.ToErrno(err)
	}
	op.hardlinked = !n.dir && op.st.Nlink > 1
	op.origin = whiteout.EncodeOrigin(op.src)
	if n.home().meta {
		// A lower file with metadata only: its data comes along, from
		// where the lookup found it.
		dl, errno := n.dataFile()
		if errno != 0 {
			return nil, errno
		}
		op.data = &dl
		if how == metaOnly {
			op.how = withData
		}
	}
	return op, 0
}

// metacopy reports whether the copy takes metadata only: where asked
// for, allowed, and the source is a regular file with data to leave
// behind.
func (op *copyUpOp) metacopy() bool {
	return op.how == metaOnly && op.n.u.metacopy && op.st.Mode&unix.S_IFMT == unix.S_IFREG && op.st.Size > 0
}

// options are the copy options every copy-up shares.
func (op *copyUpOp) options() copyup.Options {
	return copyup.Options{
		NoData:    op.how == noData,
		Fsync:     op.n.u.fsync,
		SkipXattr: whiteout.IsPrivateXattr,
		KeepOwner: op.n.u.chownNew,
		Data:      op.data,
	}
}

// copy copies the source to dst and counts it.
func (op *copyUpOp) copy(dst at.Loc, opt copyup.Options) error {
	if err := copyup.Entry(op.src, &op.st, dst, op.n.u.work, opt); err != nil {
		return err
	}
	u := op.n.u
	u.stats.copyUps.Add(1)
	if op.st.Mode&unix.S_IFMT == unix.S_IFREG && !opt.Metacopy && !opt.NoData {
		u.stats.copyUpBytes.Add(uint64(op.st.Size))
	}
	return nil
}

// plain copies the entry to its own name in the upper layer.
// Preconditions: n.mu held.
func (op *copyUpOp) plain() syscall.Errno {
	n, u := op.n, op.n.u
	opt := op.options()
	opt.SetXattrs = map[string][]byte{}
	// The origin record keeps st_ino (and readdir's d_ino) the lower
	// file's, across remounts. A lower hard link reaches this point only
	// without the index (index=off, or a layer without file handles):
	// then its copy is a file of its own and gets no origin, since the
	// copies of its several names would all claim one identity. After a
	// remount it reports its own inode number, as kernel overlay with
	// index=off; within the mount its node keeps the number it had,
	// because a new kernel inode would split the page cache between the
	// names and files already open.
	if op.origin != nil && !op.hardlinked && u.ns.Allows(op.st.Mode) {
		opt.SetXattrs[u.ns.Name(whiteout.Origin)] = op.origin
	}
	// Metadata only where the kernel format allows it (trusted xattrs:
	// a userxattr kernel mount follows no metacopy) and the file is one
	// of its own with data to leave behind.
	srcLayer := n.topLayer()
	if op.metacopy() && !op.hardlinked {
		opt.Metacopy = true
		opt.SetXattrs[u.ns.Name(whiteout.Metacopy)] = []byte{}
	}
	// A whiteout form in the upper dir cannot exist for a name that is
	// shown from a lower layer, so the destination is free.
	if errno := op.parent.keepingTimes(func() error { return op.copy(op.dst, opt) }); errno != 0 {
		return errno
	}
	op.parent.markImpure()
	if n.dir {
		fd, err := at.OpenDir(op.dst)
		if err != nil {
			return fs.ToErrno(err)
		}
		u.hold(fd)
		upper := merge.Dir{Layer: upperLayer, Fd: fd, Name: op.name}
		n.move(func(h *home) {
			h.dirs = append([]merge.Dir{upper}, h.dirs...)
			h.copies++
		})
		return 0
	}
	n.move(func(h *home) {
		h.layer, h.meta = upperLayer, opt.Metacopy
		if opt.Metacopy {
			h.dataLayer = srcLayer
		}
		h.copies++
	})
	return 0
}

// keepingTimes runs change, which adds an entry to the upper copy of d
// for a copy-up, and puts d's times back: a copy-up is no change the user
// made, as with kernel overlay.
func (d *node) keepingTimes(change func() error) syscall.Errno {
	up := at.Loc{Dir: d.fdOf(upperLayer)}
	var st unix.Stat_t
	keep := at.Stat(up, &st) == nil
	if err := change(); err != nil {
		return fs.ToErrno(err)
	}
	if keep {
		at.Utimes(up, at.Times(&st))
	}
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
		at.SetXattr(at.Loc{Dir: dirfd}, u.ns.Name(whiteout.Impure), []byte("y"), 0)
	}
}

func (u *union) isImpure(dirfd int) bool {
	return at.HasXattr(at.Loc{Dir: dirfd}, u.ns.Name(whiteout.Impure))
}

// copyUpData gives a metacopy file its data: copied from the lower file
// into the upper one in place (or dropped, for a truncate to 0), then the
// metacopy mark goes. Until the mark is gone the data is read from below,
// so a crash half way loses nothing. The write must not show as a change:
// times and mode are put back. Preconditions: n.mu not held.
func (n *node) copyUpData(truncate bool) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.home().meta {
		return 0
	}
	l, errno := n.loc()
	if errno != 0 {
		return errno
	}
	out, err := at.Open(l, unix.O_WRONLY)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(out)
	var st unix.Stat_t
	if err := unix.Fstat(out, &st); err != nil {
		return fs.ToErrno(err)
	}
	// Writing the data clears the file's capabilities, as any write does:
	// it is no change the user made, so they are put back (as the kernel
	// does).
	self := at.Loc{Dir: out}
	capability, capErr := at.GetXattr(self, xattrCaps)
	if truncate {
		err = unix.Ftruncate(out, 0)
	} else {
		dl, errno := n.dataFile()
		if errno != 0 {
			return errno
		}
		in, oerr := at.Open(dl, unix.O_RDONLY)
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
	if capErr == nil {
		at.SetXattr(self, xattrCaps, capability, 0)
	}
	at.Chmod(self, st.Mode&^unix.S_IFMT)
	at.Utimes(self, at.Times(&st))
	if n.u.fsync {
		if err := unix.Fsync(out); err != nil {
			return fs.ToErrno(err)
		}
	}
	at.RemoveXattr(self, whiteout.Trusted.Name(whiteout.Metacopy))
	n.move(func(h *home) { h.meta = false; h.copies++ })
	return 0
}
