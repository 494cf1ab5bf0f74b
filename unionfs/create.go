package unionfs

import (
	"context"
	"encoding/binary"
	"path"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

var (
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeMknoder   = (*node)(nil)
	_ fs.NodeSymlinker = (*node)(nil)
	_ fs.NodeLinker    = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRmdirer   = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeTmpfiler  = (*node)(nil)
)

// dirent is one raw entry of a layer directory.
type dirent struct {
	name string
	typ  uint8
	ino  uint64
}

// readDirents lists a layer directory given its O_PATH fd.
func readDirents(dirfd int) ([]dirent, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.LittleEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			out = append(out, dirent{name: string(name), typ: b[18], ino: binary.LittleEndian.Uint64(b[0:8])})
			b = b[reclen:]
		}
	}
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return unix.S_IFREG
}

// readMerged lists the merged directory made of dirs: upper entries first,
// then each lower's new names; whiteouts and markers hide names and are
// never listed.
func (u *union) readMerged(dirs []layerDir) ([]fuse.DirEntry, syscall.Errno) {
	return u.readMergedIno(dirs, nil)
}

// readMergedIno is readMerged where known gives the inode number of
// entries that have a node already, so d_ino equals what stat reports.
func (u *union) readMergedIno(dirs []layerDir, known func(name string) (uint64, bool)) ([]fuse.DirEntry, syscall.Errno) {
	seen := map[string]struct{}{}
	var out []fuse.DirEntry
	for _, ld := range dirs {
		ents, err := readDirents(ld.fd)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		// Only an impure upper directory holds copied-up entries whose
		// inode number comes from their origin.
		impure := ld.layer == upperLayer && u.samefs && u.isImpure(ld.fd)
		var hides []string
		for _, e := range ents {
			if e.name == "." || e.name == ".." {
				continue
			}
			if t, ok := whiteout.Target(e.name); ok {
				hides = append(hides, t)
				continue
			}
			if whiteout.IsMarkerName(e.name) {
				continue
			}
			if _, dup := seen[e.name]; dup {
				continue
			}
			seen[e.name] = struct{}{}
			if e.typ == unix.DT_CHR || e.typ == unix.DT_UNKNOWN || (e.typ == unix.DT_REG && ld.opq.XattrWhiteouts) {
				var x unix.Statx_t
				if err := statxAt(ld.fd, e.name, &x); err != nil {
					continue // vanished
				}
				if isWhiteout(ld, e.name, &x) {
					continue
				}
				e.typ = uint8(x.Mode>>12) & 0xf
			}
			ino := e.ino
			if known != nil {
				if k, ok := known(e.name); ok {
					out = append(out, fuse.DirEntry{Name: e.name, Mode: dtToMode(e.typ), Ino: k})
					continue
				}
			}
			if impure {
				if o, ok := u.originIno(ld.fd, e.name); ok {
					// d_ino equals st_ino of a copied-up entry
					out = append(out, fuse.DirEntry{Name: e.name, Mode: dtToMode(e.typ), Ino: o})
					continue
				}
			}
			out = append(out, fuse.DirEntry{Name: e.name, Mode: dtToMode(e.typ), Ino: u.ino(ld.layer, ino)})
		}
		// A ".wh.NAME" hides NAME in the layers below, not its own.
		for _, h := range hides {
			seen[h] = struct{}{}
		}
	}
	return out, 0
}

// dirHandle is an open directory: a snapshot of the merged listing taken
// at opendir, so offsets stay valid and a listing is stable while it is
// read.
type dirHandle struct {
	entries []fuse.DirEntry
	next    int
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
)

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.next >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.next]
	h.next++
	e.Off = uint64(h.next)
	return &e, 0
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

var _ fs.NodeOpendirHandler = (*node)(nil)

// OpendirHandle lets the kernel cache the listing (FOPEN_CACHE_DIR) across
// opens: every change to the directory goes through this mount, and the
// kernel drops its cache when it sees one.
func (d *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	ents, errno := d.u.readMergedIno(d.layerDirs(), func(name string) (uint64, bool) {
		if ch := d.GetChild(name); ch != nil {
			return ch.StableAttr().Ino, true
		}
		return 0, false
	})
	if errno != 0 {
		return nil, 0, errno
	}
	parentIno := uint64(1)
	if _, p := d.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	list := append([]fuse.DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: d.StableAttr().Ino},
		{Name: "..", Mode: unix.S_IFDIR, Ino: parentIno},
	}, ents...)
	return &dirHandle{entries: list}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// child returns the node of an existing entry of d.
// The kernel looks both names of a rename up first, so the nodes exist;
// otherwise ESTALE makes it look again.
func (d *node) child(ctx context.Context, name string) (*node, syscall.Errno) {
	if in := d.GetChild(name); in != nil {
		if n := in.Operations().(*node); !n.forgotten.Load() {
			return n, 0
		}
	}
	return nil, syscall.ESTALE
}

type whKind int

const (
	whNone whKind = iota
	whChar        // char 0/0 device
	whFile        // ".wh.NAME" file
)

// upperWhiteout tells which whiteout form, if any, holds name in the upper
// directory up.
func upperWhiteout(up int, name string) whKind {
	var x unix.Statx_t
	if statxAt(up, name, &x) == nil && x.Mode&unix.S_IFMT == unix.S_IFCHR && x.Rdev_major == 0 && x.Rdev_minor == 0 {
		return whChar
	}
	if whiteout.HasFileWhiteout(up, name) {
		return whFile
	}
	return whNone
}

// checkNewName refuses names the union cannot represent.
func (d *node) checkNewName(name string) syscall.Errno {
	if !d.u.writable() {
		return syscall.EROFS
	}
	if whiteout.IsMarkerName(name) {
		return syscall.EINVAL // would read back as a whiteout or marker
	}
	if len(name) > maxNameLen {
		return syscall.ENAMETOOLONG // no room left for its ".wh." whiteout
	}
	return 0
}

// maxNameLen is the longest name a new entry may have: statfs reports it,
// so that a ".wh.NAME" whiteout for it always fits.
const maxNameLen = 255 - len(whiteout.Prefix)

// place creates a new entry name in d's upper directory with mk, replacing
// a whiteout there atomically: the entry is built in the work dir and
// renamed over it. A directory made over a whiteout is opaque, so the
// deleted lower directory stays hidden. chown gives it the caller's ids.
func (d *node) place(ctx context.Context, name string, isDir, chown bool, mk func(dir int, name string) error) syscall.Errno {
	up := d.fdOf(upperLayer)
	if up < 0 {
		return syscall.EIO
	}
	wh := upperWhiteout(up, name)
	if wh == whNone {
		if err := mk(up, name); err != nil {
			return fs.ToErrno(err)
		}
		if chown {
			d.own(ctx, up, up, name, isDir)
		}
		return 0
	}
	work := d.u.work
	tmp := copyup.TempName()
	if err := mk(work, tmp); err != nil {
		return fs.ToErrno(err)
	}
	fail := func(err error) syscall.Errno {
		copyup.RemoveAll(work, tmp)
		return fs.ToErrno(err)
	}
	if chown {
		d.own(ctx, up, work, tmp, isDir)
	}
	if isDir {
		fd, err := unix.Openat(work, tmp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		err = whiteout.MakeOpaque(fd, d.u.ns)
		unix.Close(fd)
		if err != nil {
			return fail(err)
		}
	}
	switch {
	case wh == whChar && isDir:
		if err := unix.Renameat2(work, tmp, up, name, unix.RENAME_EXCHANGE); err != nil {
			return fail(err)
		}
		unix.Unlinkat(work, tmp, 0) // the whiteout, now in the work dir
	case wh == whChar:
		if err := unix.Renameat(work, tmp, up, name); err != nil {
			return fail(err)
		}
	default:
		if err := unix.Renameat2(work, tmp, up, name, unix.RENAME_NOREPLACE); err != nil {
			return fail(err)
		}
		unix.Unlinkat(up, whiteout.Prefix+name, 0)
	}
	return 0
}

// own gives a new entry the caller's ids, as if the caller had made it;
// in a setgid directory the group is the directory's.
func (d *node) own(ctx context.Context, up, dir int, name string, isDir bool) {
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
	var st unix.Stat_t
	setgid := unix.Fstat(up, &st) == nil && st.Mode&unix.S_ISGID != 0
	if setgid {
		gid = int(st.Gid)
	}
	var before unix.Stat_t
	if err := statAt(dir, name, &before); err != nil {
		return
	}
	fchownat(dir, name, uid, gid)
	mode := before.Mode & 07777
	if setgid && isDir && dir != up {
		mode |= unix.S_ISGID // built in the work dir: inherit by hand
	}
	// chown clears setuid/setgid of a file; the creator asked for them.
	kind := before.Mode & unix.S_IFMT
	if kind != unix.S_IFLNK && (mode&(unix.S_ISUID|unix.S_ISGID) != 0) {
		unix.Fchmodat(unix.AT_FDCWD, procPath(dir, name), mode, 0)
	}
}

// statAt stats dir/name, or dir itself for name "", without following.
func statAt(dir int, name string, st *unix.Stat_t) error {
	if name == "" {
		return unix.Fstat(dir, st)
	}
	return unix.Fstatat(dir, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// newEntry looks up an entry just made in the upper layer.
func (d *node) newEntry(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f, errno := d.find(name)
	if errno != 0 {
		return nil, errno
	}
	return d.newChild(ctx, name, f, &out.Attr), 0
}

// make runs the shared steps of mkdir, mknod and symlink.
func (d *node) make(ctx context.Context, name string, isDir bool, out *fuse.EntryOut, mk func(dir int, name string) error) (*fs.Inode, syscall.Errno) {
	if errno := d.checkNewName(name); errno != 0 {
		return nil, errno
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return nil, errno
	}
	if errno := d.place(ctx, name, isDir, true, mk); errno != 0 {
		return nil, errno
	}
	return d.newEntry(ctx, name, out)
}

func (d *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.make(ctx, name, true, out, func(dir int, nm string) error {
		return unix.Mkdirat(dir, nm, mode)
	})
}

func (d *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && rdev == 0 {
		return nil, syscall.EPERM // that is a whiteout, as the kernel says
	}
	return d.make(ctx, name, false, out, func(dir int, nm string) error {
		return unix.Mknodat(dir, nm, mode, int(rdev))
	})
}

func (d *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return d.make(ctx, name, false, out, func(dir int, nm string) error {
		return unix.Symlinkat(target, dir, nm)
	})
}

func (d *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	fd := -1
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_TRUNC
	in, errno := d.make(ctx, name, false, out, func(dir int, nm string) error {
		var err error
		fd, err = unix.Openat(dir, nm, int(flags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
		return err
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	ch := in.Operations().(*node)
	return in, d.u.handle(newFile(ch, fd, flags, upperLayer, ch.copyups.Load())), 0, 0
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
	fd, err := unix.Openat(d.fdOf(upperLayer), ".", int(flags)|unix.O_TMPFILE|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	keep, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	d.own(ctx, d.fdOf(upperLayer), keep, "", false)
	var x unix.Statx_t
	if err := statxAt(fd, "", &x); err != nil {
		unix.Close(fd)
		unix.Close(keep)
		return nil, nil, 0, fs.ToErrno(err)
	}
	ch := &node{u: d.u}
	d.u.hold(keep)
	ch.anon.Store(int32(keep))
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
	tfd, tname, errno := t.loc()
	if errno != 0 {
		return nil, errno
	}
	if errno := d.place(ctx, name, false, false, func(dir int, nm string) error {
		if tname == "" { // a nameless O_TMPFILE file
			return unix.Linkat(unix.AT_FDCWD, procPath(tfd, ""), dir, nm, unix.AT_SYMLINK_FOLLOW)
		}
		return unix.Linkat(tfd, tname, dir, nm, 0)
	}); errno != 0 {
		return nil, errno
	}
	// The node's attributes, with the link count the union shows.
	var x unix.Statx_t
	if errno := t.stat(&x); errno != 0 {
		return nil, errno
	}
	d.u.fillAttr(&out.Attr, &x, false)
	return t.EmbeddedInode(), 0
}

// replaceWithWhiteout swaps the upper entry up/name (file or directory)
// for a whiteout and deletes it, atomically where the kernel offers
// RENAME_WHITEOUT.
func (u *union) replaceWithWhiteout(up int, name string) error {
	tmp := copyup.TempName()
	err := unix.Renameat2(up, name, u.work, tmp, unix.RENAME_WHITEOUT)
	if err != nil {
		if err := unix.Renameat(up, name, u.work, tmp); err != nil {
			return err
		}
		if err := whiteout.Make(up, name); err != nil {
			unix.Renameat(u.work, tmp, up, name) // put it back
			return err
		}
	}
	return copyup.RemoveAll(u.work, tmp)
}

// lockChild holds the child's node lock (if the child is known) so that a
// concurrent copy-up of it cannot interleave with its removal.
func (d *node) lockChild(name string) (*node, func()) {
	in := d.GetChild(name)
	if in == nil {
		return nil, func() {}
	}
	c := in.Operations().(*node)
	c.mu.Lock()
	return c, c.mu.Unlock
}

func (d *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, false)
}

func (d *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, true)
}

func (d *node) remove(ctx context.Context, name string, isDir bool) syscall.Errno {
	if !d.u.writable() {
		return syscall.EROFS
	}
	if whiteout.IsMarkerName(name) {
		return syscall.ENOENT
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	// Check before copying anything up: a refused removal changes nothing.
	f, errno := d.find(name)
	if errno != 0 {
		return errno
	}
	defer d.u.closeDirs(&f)
	if isDir != (f.dirs != nil) {
		if isDir {
			return syscall.ENOTDIR
		}
		return syscall.EISDIR
	}
	if isDir {
		ents, errno := d.u.readMerged(f.dirs)
		if errno != 0 {
			return errno
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	// One name of a file with several: its other names keep the data.
	if errno := d.ensureNamed(ctx, name, &f); errno != 0 {
		return errno
	}
	victim, unlock := d.lockChild(name)
	defer unlock()
	if victim != nil {
		if victim.inUpper() && victim.indexName() == "" {
			f.layer = upperLayer // copied up since we looked
		}
		victim.keepForOpeners()
		if !isDir {
			defer d.u.dropIndexIfUnused(victim)
		}
	}
	up := d.fdOf(upperLayer)
	if f.layer != upperLayer {
		d.u.stats.whiteouts.Add(1)
		return fs.ToErrno(whiteout.Make(up, name))
	}
	if d.lowerHas(name) {
		d.u.stats.whiteouts.Add(1)
		return fs.ToErrno(d.u.replaceWithWhiteout(up, name))
	}
	if !isDir {
		return fs.ToErrno(unix.Unlinkat(up, name, 0))
	}
	// A pure upper directory may still hold whiteouts: move it out of
	// sight first, then delete it.
	tmp := copyup.TempName()
	if err := unix.Renameat(up, name, d.u.work, tmp); err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(copyup.RemoveAll(d.u.work, tmp))
}

// merged reports whether a directory merges an upper and a lower copy.
func (n *node) merged() bool { return len(n.layerDirs()) > 1 }

// opaque reports whether a directory's upper copy is marked opaque.
func (n *node) opaque() bool {
	d := n.layerDirs()
	return len(d) > 0 && d[0].layer == upperLayer && d[0].opq.Opaque
}

// markOpaque marks a directory's upper copy opaque and remembers it.
func (n *node) markOpaque() error {
	d := n.layerDirs()
	if len(d) == 0 || d[0].layer != upperLayer {
		return syscall.EIO
	}
	if err := whiteout.MakeOpaque(d[0].fd, n.u.ns); err != nil {
		return err
	}
	nd := append([]layerDir{}, d...)
	nd[0].opq.Opaque = true
	n.dirs.Store(&nd)
	return nil
}

// pureUpper reports whether a directory lives in the upper layer only, so
// that renaming it needs no record of where its lower part was.
func (n *node) pureUpper() bool {
	d := n.layerDirs()
	return len(d) == 1 && d[0].layer == upperLayer
}

func (d *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if !d.u.writable() {
		return syscall.EROFS
	}
	if whiteout.IsMarkerName(name) {
		return syscall.ENOENT
	}
	if whiteout.IsMarkerName(newName) {
		return syscall.EINVAL
	}
	if len(newName) > maxNameLen {
		return syscall.ENAMETOOLONG
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 || flags == unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE {
		return syscall.EINVAL
	}
	nd, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	u := d.u
	u.renameMu.Lock()
	defer u.renameMu.Unlock()

	s, errno := d.child(ctx, name)
	if errno != 0 {
		return errno
	}
	var t *node
	var tfound found
	if tf, errno := nd.find(newName); errno == 0 {
		u.closeDirs(&tf)
		tfound = tf
		if t, errno = nd.child(ctx, newName); errno != 0 {
			return errno
		}
	} else if errno != syscall.ENOENT {
		return errno
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if t == nil {
			return syscall.ENOENT
		}
		return d.exchange(ctx, name, s, nd, newName, t)
	}
	if t != nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if t == s {
			return 0 // two names of one file: nothing to do
		}
		if t.dir && !s.dir {
			return syscall.EISDIR
		}
		if !t.dir && s.dir {
			return syscall.ENOTDIR
		}
	}
	// A directory with a lower part moves in O(1): its upper copy records
	// where that part lives (kernel redirect_dir).
	redirect := s.dir && !s.pureUpper()
	if redirect && !u.redirectDir {
		return syscall.EXDEV // redirect_dir=off: mv copies instead
	}
	if t != nil && t.dir {
		ents, errno := u.readMerged(t.layerDirs())
		if errno != 0 {
			return errno
		}
		if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	if t != nil {
		t.keepForOpeners()
	}
	if errno := s.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if errno := nd.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	// A name of an indexed file moves as an upper name; a replaced one
	// leaves the union as one (index.go).
	if !s.dir {
		if errno := d.linkUp(ctx, name, s); errno != 0 {
			return errno
		}
	}
	if t != nil && !t.dir {
		if errno := nd.ensureNamed(ctx, newName, &tfound); errno != 0 {
			return errno
		}
		defer u.dropIndexIfUnused(t)
	}
	if redirect {
		if errno := s.setRedirect(nd == d); errno != 0 {
			return errno
		}
	}
	up, nup := d.fdOf(upperLayer), nd.fdOf(upperLayer)
	if nd != d {
		nd.markImpure()
	}
	srcNeedsWhiteout := d.lowerHas(name)
	dstHasLower := nd.lowerHas(newName)

	if t != nil && t.dir && t.inUpper() {
		// The target's upper copy may hold whiteouts; the rename needs
		// it truly empty. Its lower part stays hidden by what arrives.
		tmp := copyup.TempName()
		if err := unix.Renameat(nup, newName, u.work, tmp); err != nil {
			return fs.ToErrno(err)
		}
		defer copyup.RemoveAll(u.work, tmp)
	}
	if s.dir && !redirect && (dstHasLower || nd.merged()) && !s.opaque() {
		// As the kernel: a directory moved into a merged directory is
		// made opaque, so it never merges with a lower one of its name.
		if err := s.markOpaque(); err != nil {
			return fs.ToErrno(err)
		}
	}
	wh := upperWhiteout(nup, newName)
	if s.dir && wh == whChar {
		// A directory cannot replace a device: swap with the whiteout,
		// which then marks the old name if that is needed.
		if err := unix.Renameat2(up, name, nup, newName, unix.RENAME_EXCHANGE); err != nil {
			return fs.ToErrno(err)
		}
		if !srcNeedsWhiteout {
			unix.Unlinkat(up, name, 0)
		}
		return 0
	}
	if srcNeedsWhiteout {
		d.u.stats.whiteouts.Add(1)
		err := unix.Renameat2(up, name, nup, newName, unix.RENAME_WHITEOUT)
		if err != nil {
			if err := unix.Renameat(up, name, nup, newName); err != nil {
				return fs.ToErrno(err)
			}
			if err := whiteout.Make(up, name); err != nil {
				return fs.ToErrno(err)
			}
		}
	} else if err := unix.Renameat(up, name, nup, newName); err != nil {
		return fs.ToErrno(err)
	}
	if wh == whFile {
		unix.Unlinkat(nup, whiteout.Prefix+newName, 0)
	}
	return 0
}

// exchange swaps two existing entries (RENAME_EXCHANGE). Both names stay
// occupied, so no whiteout is needed; a directory arriving where a lower
// layer has a directory is made opaque so the two do not merge.
func (d *node) exchange(ctx context.Context, name string, s, nd *node, newName string, t *node) syscall.Errno {
	sRedirect, tRedirect := s.dir && !s.pureUpper(), t.dir && !t.pureUpper()
	if (sRedirect || tRedirect) && !d.u.redirectDir {
		return syscall.EXDEV
	}
	if errno := s.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if errno := t.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if errno := nd.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if !s.dir {
		if errno := d.linkUp(ctx, name, s); errno != 0 {
			return errno
		}
	}
	if !t.dir {
		if errno := nd.linkUp(ctx, newName, t); errno != 0 {
			return errno
		}
	}
	if sRedirect {
		if errno := s.setRedirect(nd == d); errno != 0 {
			return errno
		}
	}
	if tRedirect {
		if errno := t.setRedirect(nd == d); errno != 0 {
			return errno
		}
	}
	if err := unix.Renameat2(d.fdOf(upperLayer), name, nd.fdOf(upperLayer), newName, unix.RENAME_EXCHANGE); err != nil {
		return fs.ToErrno(err)
	}
	if nd != d {
		d.markImpure()
		nd.markImpure()
	}
	if s.dir && !sRedirect && (nd.lowerHas(newName) || nd.merged()) && !s.opaque() {
		s.markOpaque()
	}
	if t.dir && !tRedirect && (d.lowerHas(name) || d.merged()) && !t.opaque() {
		t.markOpaque()
	}
	return 0
}

// maxRedirect is the kernel's default redirect_max: a longer redirect is
// not made, and the rename answers EXDEV.
const maxRedirect = 256

// setRedirect records, before directory s moves, where the layers below
// keep its lower part, as kernel redirect_dir does: its current name when
// it stays in the same directory, else the absolute path of its lower
// part. A redirect it already has stays when it still holds.
func (s *node) setRedirect(samedir bool) syscall.Errno {
	d := s.layerDirs()
	if len(d) == 0 || d[0].layer != upperLayer {
		return syscall.EIO
	}
	cur := whiteout.ReadDirMarkers(d[0].fd).Redirect
	if cur != "" && (samedir || strings.HasPrefix(cur, "/")) {
		return 0
	}
	var r string
	if samedir {
		r, _ = s.Parent()
	} else {
		r = s.lowerPath()
	}
	if r == "" || len(r) > maxRedirect {
		return syscall.EXDEV
	}
	if err := unix.Setxattr(procPath(d[0].fd, ""), s.u.ns.Name("redirect"), []byte(r), 0); err != nil {
		// As the kernel: without a redirect the move cannot be
		// recorded; EXDEV makes mv copy instead.
		return syscall.EXDEV
	}
	return 0
}

// lowerPath is the absolute path at which the layers below keep n's lower
// part: its path in the union, with each ancestor's redirect applied.
func (n *node) lowerPath() string {
	var parts []string
	for c := n; !c.IsRoot(); {
		name, p := c.Parent()
		if p == nil {
			return ""
		}
		r := ""
		if c.inUpper() {
			r = whiteout.ReadDirMarkers(c.layerDirs()[0].fd).Redirect
		}
		if strings.HasPrefix(r, "/") {
			return path.Join(append([]string{r}, parts...)...)
		}
		if r == "" {
			r = name
		}
		parts = append([]string{r}, parts...)
		c = p.Operations().(*node)
	}
	return "/" + strings.Join(parts, "/")
}
