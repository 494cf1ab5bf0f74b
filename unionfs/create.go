package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

var (
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeMknoder   = (*node)(nil)
	_ fs.NodeSymlinker = (*node)(nil)
	_ fs.NodeLinker    = (*node)(nil)
	_ fs.NodeTmpfiler  = (*node)(nil)
)

// checkNewName refuses names the union cannot represent.
func (d *node) checkNewName(name string) syscall.Errno {
	if !d.u.writable() {
		return syscall.EROFS
	}
	if whiteout.IsMarkerName(name) {
		return syscall.EINVAL // would read back as a whiteout or marker
	}
	return d.u.checkNameLen(name)
}

// checkNameLen answers ENAMETOOLONG for a name longer than the union
// takes (what statfs reports), on every path-taking operation.
func (u *union) checkNameLen(name string) syscall.Errno {
	if len(name) > u.nameMax {
		return syscall.ENAMETOOLONG
	}
	return 0
}

// place creates a new entry name in d's upper directory with mk, replacing
// a whiteout there atomically: the entry is built in the work dir and
// renamed over it. A directory made over a whiteout is opaque, so the
// deleted lower directory stays hidden. chown gives it the caller's ids.
// Preconditions: renameMu held, d in the upper layer, nothing shown at name.
func (d *node) place(ctx context.Context, name string, isDir, chown bool, mk func(l at.Loc) error) syscall.Errno {
	up := d.fdOf(upperLayer)
	if up < 0 {
		return syscall.EIO
	}
	dst := at.Loc{Dir: up, Name: name}
	wh := whiteout.FormOf(up, name)
	if wh == whiteout.NoWhiteout {
		if err := mk(dst); err != nil {
			return fs.ToErrno(err)
		}
		if chown {
			d.own(ctx, dst, isDir)
		}
		return 0
	}
	dir, done, errno := d.u.inheritingDir(up)
	if errno != 0 {
		return errno
	}
	defer done()
	tmp := at.Loc{Dir: dir, Name: at.TempName()}
	if err := mk(tmp); err != nil {
		return fs.ToErrno(err)
	}
	if chown {
		d.own(ctx, tmp, isDir)
	}
	if err := d.u.replaceWhiteout(tmp, dst, wh, isDir); err != nil {
		at.RemoveAll(tmp)
		return fs.ToErrno(err)
	}
	return 0
}

// replaceWhiteout moves the new entry tmp over the whiteout of form wh at
// dst. A directory there is made opaque first, so that the deleted lower
// directory stays hidden.
func (u *union) replaceWhiteout(tmp, dst at.Loc, wh whiteout.Form, isDir bool) error {
	if isDir {
		fd, err := at.OpenDir(tmp)
		if err != nil {
			return err
		}
		err = whiteout.MakeOpaque(fd, u.ns)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	switch {
	case wh == whiteout.CharWhiteout && isDir:
		// A directory cannot replace a device: swap, then drop the
		// whiteout, now where the directory was made.
		if err := unix.Renameat2(tmp.Dir, tmp.Name, dst.Dir, dst.Name, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		unix.Unlinkat(tmp.Dir, tmp.Name, 0)
	case wh == whiteout.CharWhiteout:
		return unix.Renameat(tmp.Dir, tmp.Name, dst.Dir, dst.Name)
	default:
		if err := unix.Renameat2(tmp.Dir, tmp.Name, dst.Dir, dst.Name, unix.RENAME_NOREPLACE); err != nil {
			return err
		}
		unix.Unlinkat(dst.Dir, whiteout.Prefix+dst.Name, 0)
	}
	return nil
}

// own gives the new entry l, to become a child of d, the caller's ids, as
// if the caller had made it; in a setgid directory the group is the
// directory's.
func (d *node) own(ctx context.Context, l at.Loc, isDir bool) {
	if !d.u.chownNew {
		return
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return
	}
	uid, gid, errno := d.u.ids.store(int(caller.Uid), int(caller.Gid))
	if errno != 0 {
		uid, gid = int(d.u.ids.overflowU), int(d.u.ids.overflowG)
	}
	up := d.fdOf(upperLayer)
	var st unix.Stat_t
	setgid := at.Stat(at.Loc{Dir: up}, &st) == nil && st.Mode&unix.S_ISGID != 0
	if setgid {
		gid = int(st.Gid)
	}
	var before unix.Stat_t
	if err := at.Stat(l, &before); err != nil {
		return
	}
	at.Chown(l, uid, gid)
	mode := before.Mode & 07777
	if setgid && isDir && l.Dir != up {
		mode |= unix.S_ISGID // built in the work dir: inherit by hand
	}
	// chown clears setuid/setgid of a file; the creator asked for them.
	kind := before.Mode & unix.S_IFMT
	if kind != unix.S_IFLNK && (mode&(unix.S_ISUID|unix.S_ISGID) != 0) {
		at.Chmod(l, mode)
	}
}

// make runs the shared steps of mkdir, mknod, symlink and create: mk
// makes the entry at l with the mode it is to have.
func (d *node) make(ctx context.Context, name string, isDir bool, mode uint32, out *fuse.EntryOut, mk func(l at.Loc, mode uint32) error) (*fs.Inode, syscall.Errno) {
	if errno := d.checkNewName(name); errno != 0 {
		return nil, errno
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return nil, errno
	}
	mode = d.createMode(mode)
	if errno := d.place(ctx, name, isDir, true, func(l at.Loc) error { return mk(l, mode) }); errno != 0 {
		return nil, errno
	}
	return d.lookup(ctx, name, out)
}

// createMode is the mode a new entry of d is made with, from the mode and
// umask of the request (rawFS): the umask applies unless a default ACL on
// d's upper copy decides instead, which the upper filesystem then
// applies, as for kernel overlay. Preconditions: d in the upper layer.
func (d *node) createMode(mode uint32) uint32 {
	mode, umask := splitUmask(mode)
	if umask != 0 && !(d.u.acl && hasDefaultACL(d.fdOf(upperLayer))) {
		mode &^= umask
	}
	return mode
}

func (d *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.make(ctx, name, true, mode, out, func(l at.Loc, mode uint32) error {
		return unix.Mkdirat(l.Dir, l.Name, mode)
	})
}

func (d *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && rdev == 0 {
		return nil, syscall.EPERM // that is a whiteout, as the kernel says
	}
	return d.make(ctx, name, false, mode, out, func(l at.Loc, mode uint32) error {
		return unix.Mknodat(l.Dir, l.Name, mode, int(rdev))
	})
}

func (d *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.make(ctx, name, false, 0, out, func(l at.Loc, _ uint32) error {
		return unix.Symlinkat(target, l.Dir, l.Name)
	})
}

func (d *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	fd := -1
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_TRUNC
	in, errno := d.make(ctx, name, false, mode, out, func(l at.Loc, mode uint32) error {
		var err error
		fd, err = at.Create(l, int(flags)&^(unix.O_CREAT|unix.O_EXCL), mode)
		return err
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	ch := in.Operations().(*node)
	return in, d.u.handle(newFile(ch, fd, flags, upperLayer, ch.home().copies)), 0, 0
}

// Tmpfile makes a nameless file (O_TMPFILE) in the upper copy of d. The
// node keeps its own descriptor so that a later linkat can name it.
func (d *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if !d.u.writable() {
		return nil, nil, 0, syscall.EROFS
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return nil, nil, 0, errno
	}
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT | syscall.O_EXCL
	fd, err := unix.Openat(d.fdOf(upperLayer), ".", int(flags)|unix.O_TMPFILE|unix.O_CLOEXEC, d.createMode(mode))
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	d.own(ctx, at.Loc{Dir: keep}, false)
	var x unix.Statx_t
	if err := at.Statx(at.Loc{Dir: fd}, &x); err != nil {
		unix.Close(fd)
		unix.Close(keep)
		return nil, nil, 0, fs.ToErrno(err)
	}
	ch := &node{u: d.u}
	d.u.hold(keep)
	ch.h.Store(&home{layer: upperLayer, anon: keep})
	in := d.NewInode(ctx, ch, fs.StableAttr{Mode: unix.S_IFREG, Ino: d.u.ino(upperLayer, x.Ino), Gen: uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)})
	d.u.fillAttr(&out.Attr, &x, false)
	return in, d.u.handle(newFile(ch, fd, flags, upperLayer, 0)), 0, 0
}

func (d *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := d.checkNewName(name); errno != 0 {
		return nil, errno
	}
	t, ok := target.(*node)
	if !ok || t.dir {
		return nil, syscall.EPERM
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	if errno := t.copyUp(ctx, withData); errno != 0 {
		return nil, errno
	}
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return nil, errno
	}
	tl, errno := t.loc()
	if errno != 0 {
		return nil, errno
	}
	if errno := d.place(ctx, name, false, false, func(l at.Loc) error { return at.Link(tl, l) }); errno != 0 {
		return nil, errno
	}
	// The new name's inode number may come from an origin record: readdir
	// of d must look for it there.
	d.markImpure()
	// The node's attributes, with the link count the union shows.
	var x unix.Statx_t
	if errno := t.stat(&x); errno != 0 {
		return nil, errno
	}
	d.u.fillAttr(&out.Attr, &x, false)
	return t.EmbeddedInode(), 0
}
