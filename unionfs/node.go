package unionfs

import (
	"context"
	"hash/fnv"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// layerDir is one layer's copy of a merged directory.
type layerDir struct {
	layer int
	fd    int // O_PATH fd
	opq   whiteout.Opacity
}

// node is one entry of the merged tree.
//
// A directory holds an O_PATH fd for each layer that merges into it, top
// first; renames and copy-ups of its ancestors never invalidate them. A
// non-directory holds only the layer it lives in and is reached through its
// parent's fd for that layer and its name.
type node struct {
	fs.Inode
	u   *union
	dir bool

	// mu serializes changes of where this entry lives (copy-up, removal).
	mu sync.Mutex
	// reopenMu serializes reopenDirs.
	reopenMu sync.Mutex
	// dirs: directories only; the slice is replaced, never changed.
	dirs atomic.Pointer[[]layerDir]
	// layer: non-directories only; upperLayer once copied up.
	layer atomic.Int32
	// copyups counts moves to the upper layer, so that handles opened
	// on a lower file notice the copy-up.
	copyups atomic.Uint64
	// lowerPT counts open passthrough handles backed by a lower file.
	lowerPT atomic.Int32
	// superseded: the entry must come back as a new node (passthrough).
	superseded atomic.Bool
	// forgotten: the kernel forgot the node and its descriptors are
	// closed; it must never be handed out again.
	forgotten atomic.Bool
	// anon is an fd of an O_TMPFILE file that has no name yet, else -1
	// (0 in a zero node means "none" too: real values are >= 3).
	anon atomic.Int32
	// meta: a regular file whose upper copy holds metadata only (kernel
	// metacopy). Its data is the copy of the same name in layer
	// dataLayer of the parent, or, where a redirect names another place,
	// dataFd: an O_PATH fd of it, kept until the node is forgotten.
	meta      atomic.Bool
	dataLayer atomic.Int32
	dataFd    atomic.Int32
	// idx names the index entry of a file with several names (index.go):
	// every name reads and writes that inode.
	idx atomic.Pointer[string]
	// impure: the directory's upper copy is known to be marked impure.
	impure atomic.Bool
}

var (
	_ fs.NodeLookuper    = (*node)(nil)
	_ fs.NodeGetattrer   = (*node)(nil)
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeReadlinker  = (*node)(nil)
	_ fs.NodeStatfser    = (*node)(nil)
	_ fs.NodeOnForgetter = (*node)(nil)
)

func (n *node) layerDirs() []layerDir {
	if p := n.dirs.Load(); p != nil {
		return *p
	}
	if n.dir && !n.IsRoot() {
		return n.reopenDirs()
	}
	return nil
}

// reopenDirs resolves a directory's layers again by its name. go-fuse may
// call OnForget (which closes them) for a node that is then used again
// (a LOOKUP racing with a FORGET, or a spurious forget); such a node heals
// on its next use instead of looking empty.
func (n *node) reopenDirs() []layerDir {
	n.reopenMu.Lock()
	defer n.reopenMu.Unlock()
	if p := n.dirs.Load(); p != nil {
		return *p
	}
	name, p := n.Parent()
	if p == nil {
		return nil
	}
	f, errno := p.Operations().(*node).find(name)
	if errno != 0 || f.dirs == nil {
		n.u.closeDirs(&f)
		return nil
	}
	dirs := f.dirs
	n.dirs.Store(&dirs)
	n.forgotten.Store(false)
	return dirs
}

// fdOf returns the directory's fd in layer, or -1.
func (n *node) fdOf(layer int) int {
	for _, ld := range n.layerDirs() {
		if ld.layer == layer {
			return ld.fd
		}
	}
	return -1
}

func (n *node) inUpper() bool {
	if n.dir {
		d := n.layerDirs()
		return len(d) > 0 && d[0].layer == upperLayer
	}
	return n.layer.Load() == upperLayer
}

// topLayer is the layer whose copy of the entry is shown.
func (n *node) topLayer() int {
	if n.dir {
		return n.layerDirs()[0].layer
	}
	return int(n.layer.Load())
}

// parentNode returns the name and parent of n, or ENOENT once n has no
// name left (unlinked while open). Callers hold renameMu.
func (n *node) parentNode() (string, *node, syscall.Errno) {
	name, p := n.Parent()
	if p == nil {
		return "", nil, syscall.ENOENT
	}
	return name, p.Operations().(*node), 0
}

// anonFd returns the fd of a nameless O_TMPFILE entry, or -1.
func (n *node) anonFd() int {
	if fd := n.anon.Load(); fd > 0 {
		return int(fd)
	}
	return -1
}

// loc returns a directory fd and a name that reach the entry's top copy.
// For a directory the name is "" and the fd is its own O_PATH fd.
func (n *node) loc() (int, string, syscall.Errno) {
	if n.dir {
		return n.layerDirs()[0].fd, "", 0
	}
	if h := n.indexName(); h != "" {
		return n.u.index, h, 0 // one inode for all its names
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		if fd := n.anonFd(); fd >= 0 {
			return fd, "", 0
		}
		return -1, "", errno
	}
	fd := p.fdOf(int(n.layer.Load()))
	if fd < 0 {
		return -1, "", syscall.EIO
	}
	return fd, name, 0
}

// OnForget releases the node's descriptors. go-fuse may still revive the
// node for a concurrent LOOKUP of the same entry; newChild then gives it
// fresh descriptors (both sides hold n.mu).
func (n *node) OnForget() {
	if n.IsRoot() { // the root's fds belong to the union
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.forgotten.Store(true)
	n.u.reads.drop(n)
	if fd := n.anonFd(); fd >= 0 {
		n.anon.Store(0)
		n.u.release(fd)
	}
	if fd := n.dataFd.Swap(0); fd > 0 {
		n.u.release(int(fd))
	}
	if n.dir {
		for _, ld := range n.layerDirs() {
			n.u.release(ld.fd)
		}
		n.dirs.Store(nil)
	}
}

// found is the result of resolving a name top-down through the layers.
type found struct {
	layer int
	st    unix.Statx_t
	dirs  []layerDir // directories: every merging layer, fds open
	// exists: some layer shows the name (layer and st are set).
	exists bool
	// meta: an upper file with metadata only; its data is the same name
	// in dataLayer, or data (an O_PATH fd, held) where a redirect names
	// another place; neither is set where no data was found.
	meta      bool
	dataLayer int
	data      int
	// index: the entry is a name of the indexed inode of that name.
	index string
}

// closeDirs releases the descriptors f holds.
func (u *union) closeDirs(f *found) {
	for _, ld := range f.dirs {
		u.release(ld.fd)
	}
	f.dirs = nil
	if f.data > 0 {
		u.release(f.data)
	}
	f.data = 0
}

const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

func statxAt(dirfd int, name string, x *unix.Statx_t) error {
	if name == "" {
		return unix.Statx(dirfd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, statxMask, x)
	}
	return unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, statxMask, x)
}

// isWhiteout reports whether the entry described by x is a whiteout.
func isWhiteout(ld layerDir, name string, x *unix.Statx_t) bool {
	switch x.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return x.Rdev_major == 0 && x.Rdev_minor == 0
	case unix.S_IFREG:
		if ld.opq.XattrWhiteouts && x.Size == 0 {
			var st unix.Stat_t
			st.Mode, st.Size = uint32(x.Mode), 0
			return whiteout.IsXattrWhiteout(ld.fd, name, &st)
		}
	}
	return false
}

// find resolves name in directory d: the first layer that has the name
// decides; whiteouts and opaque directories stop the walk; directories of
// lower layers merge until a non-directory or an opaque one. A directory
// with a redirect (kernel redirect_dir: it was renamed) continues the
// walk where its lower part lives: under another name in the same parent,
// or at an absolute path from the roots of the layers below.
func (d *node) find(name string) (found, syscall.Errno) {
	var f found
	cur, abs, last := name, "", -1
	for _, ld := range d.layerDirs() {
		last = ld.layer
		stop, redirect, errno := d.u.findIn(&f, ld, cur)
		if errno != 0 {
			d.u.closeDirs(&f)
			return f, errno
		}
		if stop {
			abs = ""
			break
		}
		if strings.HasPrefix(redirect, "/") {
			abs = redirect
			break
		}
		if redirect != "" {
			cur = redirect
		}
	}
	for layer := last + 1; abs != "" && layer < len(d.u.roots); layer++ {
		ld, base, walk := d.u.openParentPath(layer, abs)
		if walk == walkStop {
			break
		}
		if walk == walkMissing {
			continue
		}
		stop, redirect, errno := d.u.findIn(&f, ld, base)
		unix.Close(ld.fd)
		if errno != 0 {
			d.u.closeDirs(&f)
			return f, errno
		}
		if stop || walk == walkLast {
			break
		}
		if redirect != "" && !strings.HasPrefix(redirect, "/") {
			redirect = path.Join(path.Dir(abs), redirect)
		}
		if redirect != "" {
			abs = redirect
		}
	}
	if f.exists && f.layer == upperLayer && mayBeMetacopy(&f.st) {
		d.findData(&f, name)
		if f.meta && d.u.noFollowMetacopy {
			// As the kernel with metacopy=off: such a file is refused.
			d.u.closeDirs(&f)
			return found{}, syscall.EPERM
		}
	}
	if f.exists && f.dirs == nil && d.u.index >= 0 && f.st.Mode&unix.S_IFMT == unix.S_IFREG && f.st.Nlink > 1 {
		d.findIndex(&f, name)
	}
	return f.result()
}

// mayBeMetacopy: an upper file with metadata only is a hole of its data's
// size; only such a file needs its xattrs read on lookup.
func mayBeMetacopy(x *unix.Statx_t) bool {
	// At most an xattr block (ext4) beside no data at all.
	return x.Mode&unix.S_IFMT == unix.S_IFREG && x.Size > 0 && (x.Blocks*512 < x.Size || x.Blocks*512 <= 8192)
}

// findData looks up where the data of a metacopy upper file lives: the
// same name in the lower layers of d, or what its redirect names (the
// kernel writes one when it renames a metacopy file: the old name within
// the same directory, else an absolute path).
func (d *node) findData(f *found, name string) {
	up := d.fdOf(upperLayer)
	p := procPath(up, name)
	// Only the trusted form exists: a userxattr kernel mount makes and
	// follows no metacopy files, and neither does layerfs.
	if !hasXattr(p, whiteout.TrustedPrefix+"metacopy") {
		return
	}
	f.meta = true // reads fail with EIO unless data is found
	var redirect string
	for _, ns := range []whiteout.Namespace{whiteout.TrustedPrefix, whiteout.UserPrefix} {
		if v, err := copyup.GetXattr(p, ns.Name("redirect")); err == nil && whiteout.ValidRedirect(string(v)) {
			redirect = string(v)
		}
	}
	// try looks for the data at name in ld; keep says to hold an fd of it
	// (its place is not the node's own name).
	try := func(ld layerDir, name string, keep bool) (stop bool) {
		var x unix.Statx_t
		if err := statxAt(ld.fd, name, &x); err != nil {
			return whiteout.HasFileWhiteout(ld.fd, name)
		}
		if x.Mode&unix.S_IFMT != unix.S_IFREG {
			return true
		}
		f.st.Blocks = x.Blocks
		if !keep {
			f.dataLayer = ld.layer
		} else if fd, err := unix.Openat(ld.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			d.u.hold(fd)
			f.data = fd
		}
		return true
	}
	if !strings.HasPrefix(redirect, "/") {
		keep := redirect != ""
		if keep {
			name = redirect // renamed within its directory
		}
		for _, ld := range d.layerDirs() {
			if ld.layer != upperLayer && try(ld, name, keep) {
				return
			}
		}
		return
	}
	for layer := 1; layer < len(d.u.roots); layer++ {
		ld, base, walk := d.u.openParentPath(layer, redirect)
		if walk == walkStop {
			return
		}
		if walk == walkMissing {
			continue
		}
		stop := try(ld, base, true)
		unix.Close(ld.fd)
		if stop || walk == walkLast {
			return
		}
	}
}

func hasXattr(p, name string) bool {
	_, err := unix.Lgetxattr(p, name, nil)
	return err == nil
}

func (f *found) result() (found, syscall.Errno) {
	if !f.exists {
		return *f, syscall.ENOENT
	}
	return *f, 0
}

// findIn looks name up in one layer's directory ld and adds what it finds
// to f. stop says the walk ends here; redirect is the redirect of a
// directory found.
func (u *union) findIn(f *found, ld layerDir, name string) (stop bool, redirect string, errno syscall.Errno) {
	var x unix.Statx_t
	err := statxAt(ld.fd, name, &x)
	if err == unix.ENOENT {
		return whiteout.HasFileWhiteout(ld.fd, name), "", 0
	}
	if err != nil {
		return true, "", fs.ToErrno(err)
	}
	if isWhiteout(ld, name, &x) {
		return true, "", 0
	}
	isDir := x.Mode&unix.S_IFMT == unix.S_IFDIR
	if f.exists && !isDir {
		return true, "", 0 // a non-directory below a directory is hidden
	}
	if !f.exists {
		f.layer, f.st, f.exists = ld.layer, x, true
		if !isDir {
			return true, "", 0
		}
	}
	fd, err := unix.Openat(ld.fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if len(f.dirs) == 0 {
			return true, "", fs.ToErrno(err)
		}
		return true, "", 0
	}
	u.hold(fd)
	m := whiteout.ReadDirMarkers(fd)
	f.dirs = append(f.dirs, layerDir{ld.layer, fd, m.Opacity})
	if u.noFollowRedirect {
		m.Redirect = ""
	}
	return m.Opaque, m.Redirect, 0
}

// walkResult says how the walk along an absolute redirect path went in
// one layer.
type walkResult int

const (
	walkFound   walkResult = iota // the parent directory is open
	walkLast                      // open, and an opaque directory on the way hides the layers below
	walkMissing                   // a component is missing: try the next layer
	walkStop                      // a whiteout or a non-directory on the way hides the path below
)

// openParentPath opens, in layer, the directory holding the last
// component of the absolute path p (an O_PATH fd the caller closes), for
// following an absolute redirect. As the kernel, whiteouts and opaque
// directories on the way count.
func (u *union) openParentPath(layer int, p string) (layerDir, string, walkResult) {
	dir, base := path.Split(strings.TrimPrefix(p, "/"))
	fd, err := unix.Openat(u.roots[layer], ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return layerDir{}, "", walkMissing
	}
	result := walkFound
	for _, c := range strings.Split(strings.Trim(dir, "/"), "/") {
		if c == "" {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			stop := whiteout.HasFileWhiteout(fd, c)
			unix.Close(fd)
			if stop {
				return layerDir{}, "", walkStop
			}
			return layerDir{}, "", walkMissing
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			unix.Close(fd)
			return layerDir{}, "", walkStop // a whiteout, or a file over the path
		}
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return layerDir{}, "", walkMissing
		}
		fd = next
		if whiteout.ReadOpacity(fd).Opaque {
			result = walkLast
		}
	}
	return layerDir{layer, fd, whiteout.ReadOpacity(fd)}, base, result
}

// lowerHas reports whether a layer below the upper one shows name in d,
// i.e. whether removing it from the upper layer needs a whiteout.
func (d *node) lowerHas(name string) bool {
	for _, ld := range d.layerDirs() {
		if ld.layer == upperLayer {
			continue
		}
		var x unix.Statx_t
		err := statxAt(ld.fd, name, &x)
		if err == unix.ENOENT {
			if whiteout.HasFileWhiteout(ld.fd, name) {
				return false
			}
			continue
		}
		if err != nil {
			return true // be safe: keep it hidden
		}
		return !isWhiteout(ld, name, &x)
	}
	return false
}

// newChild makes (or finds) the node for a found entry and fills attr.
func (d *node) newChild(ctx context.Context, name string, f found, attr *fuse.Attr) *fs.Inode {
	// The node the kernel already has for this name stays the node of
	// the entry: a copy-up changes where an entry lives, never which
	// node it is (a lower hard link's copy, say, has a new identity on
	// disk, but its node keeps the kernel's page cache).
	if in := d.GetChild(name); in != nil {
		if old := in.Operations().(*node); old.dir == (f.dirs != nil) && (old.dir || old.topLayer() == f.layer) && !old.superseded.Load() && !old.forgotten.Load() {
			d.u.closeDirs(&f)
			d.u.fillAttr(attr, &f.st, old.dir && old.merged())
			attr.Ino = in.StableAttr().Ino
			return in
		}
	}
	ch := &node{u: d.u, dir: f.dirs != nil}
	ino, gen := d.u.identity(f.layer, d.fdOf(f.layer), name, &f.st)
	if !ch.dir && f.layer != upperLayer && f.st.Nlink > 1 && d.u.index < 0 {
		// Without the index, lower hard links are separate entries
		// until copy-up (as in kernel overlay with index=off): keep
		// their nodes apart. With it they are one node.
		h := fnv.New64a()
		h.Write([]byte(name))
		gen ^= h.Sum64() ^ d.StableAttr().Ino
	}
	if ch.dir {
		dirs := f.dirs
		ch.dirs.Store(&dirs)
	} else {
		ch.layer.Store(int32(f.layer))
		ch.takeData(&f)
		ch.takeIndex(&f)
	}
	in := d.NewInode(ctx, ch, fs.StableAttr{Mode: uint32(f.st.Mode) & unix.S_IFMT, Ino: ino, Gen: gen})
	if old := in.Operations().(*node); old != ch {
		// An existing node won. If the kernel had forgotten it, it is
		// being revived: it gets the descriptors just opened.
		old.mu.Lock()
		if old.forgotten.Load() {
			if old.dir {
				dirs := f.dirs
				old.dirs.Store(&dirs)
			} else {
				old.layer.Store(int32(f.layer))
				old.takeData(&f)
				old.takeIndex(&f)
			}
			old.forgotten.Store(false)
		} else {
			if !old.dir {
				old.takeIndex(&f)
			}
			d.u.closeDirs(&f)
		}
		old.mu.Unlock()
	}
	d.u.fillAttr(attr, &f.st, len(f.dirs) > 1)
	attr.Ino = ino
	return in
}

// takeIndex makes a node of an indexed file use the index inode.
func (n *node) takeIndex(f *found) {
	if f.index != "" && n.indexName() == "" {
		h := f.index
		n.idx.Store(&h)
		n.layer.Store(upperLayer)
	}
}

// takeData makes a new (or revived) node of a metacopy file read its data
// through the descriptor find opened.
func (n *node) takeData(f *found) {
	if !f.meta {
		return
	}
	n.meta.Store(true)
	n.dataLayer.Store(int32(f.dataLayer))
	if f.data > 0 {
		n.dataFd.Store(int32(f.data))
	}
	f.data = 0
}

func (u *union) fillAttr(a *fuse.Attr, x *unix.Statx_t, merged bool) {
	a.Ino = x.Ino
	a.Size = x.Size
	a.Blocks = x.Blocks
	a.Atime, a.Atimensec = uint64(x.Atime.Sec), x.Atime.Nsec
	a.Mtime, a.Mtimensec = uint64(x.Mtime.Sec), x.Mtime.Nsec
	a.Ctime, a.Ctimensec = uint64(x.Ctime.Sec), x.Ctime.Nsec
	a.Mode = uint32(x.Mode)
	a.Nlink = x.Nlink
	if merged {
		// As kernel overlay: counting subdirectories of every layer is
		// not worth it; 1 tells find(1) not to optimise on nlink.
		a.Nlink = 1
	}
	a.Uid, a.Gid = x.Uid, x.Gid
	u.ids.show(&a.Uid, &a.Gid)
	a.Rdev = uint32(unix.Mkdev(x.Rdev_major, x.Rdev_minor))
	a.Blksize = x.Blksize
}

func (d *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if whiteout.IsMarkerName(name) {
		return nil, syscall.ENOENT
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	f, errno := d.find(name)
	if errno != 0 {
		return nil, errno
	}
	return d.newChild(ctx, name, f, &out.Attr), 0
}

// stat reads the attributes of the entry's top copy.
func (n *node) stat(x *unix.Statx_t) syscall.Errno {
	fd, name, errno := n.loc()
	if errno != 0 {
		return errno
	}
	if err := statxAt(fd, name, x); err != nil {
		return fs.ToErrno(err)
	}
	if h := n.indexName(); h != "" {
		x.Nlink = n.u.unionNlink(h, x.Nlink)
	}
	return 0
}

func (n *node) getattr(out *fuse.AttrOut) syscall.Errno {
	var x unix.Statx_t
	if errno := n.stat(&x); errno != 0 {
		return errno
	}
	if n.meta.Load() {
		// As the kernel: a metacopy file's blocks are its data's.
		var dx unix.Statx_t
		if fd, name, errno := n.dataFile(); errno == 0 && statxAt(fd, name, &dx) == nil {
			x.Blocks = dx.Blocks
		}
	}
	n.u.fillAttr(&out.Attr, &x, n.dir && len(n.layerDirs()) > 1)
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
	fd, name, errno := n.loc()
	if errno != 0 {
		return errno
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		var errno syscall.Errno
		if u, g, errno = n.u.ids.store(u, g); errno != 0 {
			return errno
		}
		if err := fchownat(fd, name, u, g); err != nil {
			return fs.ToErrno(err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if n.Mode()&unix.S_IFMT == unix.S_IFLNK {
			return syscall.EOPNOTSUPP // never follow a symlink of a layer
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd, name), mode, 0); err != nil {
			return fs.ToErrno(err)
		}
	}
	if hasSize {
		if errno := n.truncate(f, fd, name, int64(size)); errno != 0 {
			return errno
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
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
		var err error
		if name == "" {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd, ""), ts, 0)
		} else {
			err = unix.UtimesNanoAt(fd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	// go-fuse leaves a SETATTR reply as we make it: the inode number
	// the node is known by, and a validity, without which the next stat
	// would ask again.
	errno = n.getattr(out)
	out.Ino = n.StableAttr().Ino
	out.SetTimeout(n.u.attrTimeout)
	return errno
}

func fchownat(fd int, name string, uid, gid int) error {
	if name == "" {
		return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH)
	}
	return unix.Fchownat(fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

// truncate sets the size through the open handle when it writes the upper
// file, else through a fresh descriptor.
func (n *node) truncate(f fs.FileHandle, dirfd int, name string, size int64) syscall.Errno {
	if fh := asFile(f); fh != nil && fh.writable {
		return fs.ToErrno(unix.Ftruncate(fh.fd, size))
	}
	if n.dir {
		return syscall.EISDIR
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer unix.Close(fd)
	return fs.ToErrno(unix.Ftruncate(fd, size))
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	fd, name, errno := n.loc()
	if errno != 0 {
		return nil, errno
	}
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		sz, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		if sz < size {
			return buf[:sz], 0
		}
	}
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
	// Room for the ".wh." prefix of a whiteout file.
	out.NameLen = uint32(s.Namelen) - uint32(len(whiteout.Prefix))
	return 0
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
	dirfd, name, errno := n.loc()
	if errno != 0 {
		n.mu.Unlock()
		return nil, 0, errno
	}
	layer, copies := n.topLayer(), n.copyups.Load()
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY
	var rfd int
	var err error
	if n.meta.Load() && !write {
		// The backing file of a metacopy file is its lower data.
		dfd, dname, errno := n.dataFile()
		if errno != 0 {
			n.mu.Unlock()
			return nil, 0, errno
		}
		layer = 1 // a lower file: see lowerPT
		rfd, err = openAt(dfd, dname, int(flags))
	} else {
		rfd, err = unix.Openat(dirfd, name, int(flags)|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
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
