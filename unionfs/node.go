package unionfs

import (
	"context"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/merge"
	"golang.org/x/sys/unix"
)

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

	// mu serializes changes of where this entry lives (copy-up, removal,
	// forget); the home is only replaced with it held.
	mu sync.Mutex
	// reopenMu serializes reopenDirs.
	reopenMu sync.Mutex
	// h is where the entry lives, replaced as a whole.
	h atomic.Pointer[home]
	// lowerPT counts open passthrough handles backed by a lower file.
	lowerPT atomic.Int32
	// superseded: the entry must come back as a new node (passthrough).
	superseded atomic.Bool
	// forgotten: the kernel forgot the node and its descriptors are
	// closed; it must never be handed out again.
	forgotten atomic.Bool
	// impure: the directory's upper copy is known to be marked impure.
	impure atomic.Bool
}

// home says where a node's entry lives. It is replaced as a whole when
// that changes (copy-up, data copied in, forget), never changed in place,
// so a reader always sees one consistent answer.
type home struct {
	// dirs: a directory's copies in every merging layer, top first
	// (descriptors held by the union).
	dirs []merge.Dir
	// layer: a non-directory's layer; upperLayer once copied up.
	layer int
	// index names the index entry of a file with several names
	// (index.go): every name reads and writes that inode.
	index string
	// meta: a regular file whose upper copy holds metadata only (kernel
	// metacopy). Its data is the same name in the parent's copy in
	// dataLayer, or, where a redirect names another place, the file
	// dataFd holds (O_PATH, held until the node is forgotten).
	meta      bool
	dataLayer int
	dataFd    int
	// anon is a descriptor of the entry itself for when it has no name
	// (an O_TMPFILE file, or one unlinked while open), else 0.
	anon int
	// copies counts the entry's moves to the upper layer, so that
	// handles and cached descriptors opened earlier notice them.
	copies uint64
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

var noHome home

// home returns where the entry lives now.
func (n *node) home() *home {
	if h := n.h.Load(); h != nil {
		return h
	}
	return &noHome
}

// move replaces the node's home with a changed copy. change may run more
// than once: it must only set fields from its argument.
// Preconditions: n.mu held, except for the revival of a directory's
// descriptors (reopenDirs), which the swap keeps safe by itself.
func (n *node) move(change func(h *home)) {
	for {
		old := n.h.Load()
		var h home
		if old != nil {
			h = *old
		}
		change(&h)
		if n.h.CompareAndSwap(old, &h) {
			return
		}
	}
}

func (n *node) layerDirs() []merge.Dir {
	if d := n.home().dirs; d != nil {
		return d
	}
	if n.dir && !n.IsRoot() {
		return n.reopenDirs()
	}
	return nil
}

// reopenDirs resolves a directory's layers again by its name. go-fuse may
// call OnForget (which closes them) for a node that is then used again
// (a LOOKUP racing with a FORGET, or a spurious forget); such a node heals
// on its next use instead of looking empty. It takes no n.mu: a copy-up
// holding it may be what asks.
func (n *node) reopenDirs() []merge.Dir {
	n.reopenMu.Lock()
	defer n.reopenMu.Unlock()
	if d := n.home().dirs; d != nil {
		return d
	}
	name, p := n.Parent()
	if p == nil {
		return nil
	}
	e, err := n.u.stack.Resolve(p.Operations().(*node).layerDirs(), name)
	if err != nil || !e.IsDir() {
		n.u.stack.Close(&e)
		return nil
	}
	var kept []merge.Dir
	took := false
	n.move(func(h *home) {
		if took = h.dirs == nil; took {
			h.dirs = e.Dirs
		}
		kept = h.dirs
	})
	if !took {
		n.u.stack.Close(&e) // revived meanwhile by a lookup
	}
	n.forgotten.Store(false)
	return kept
}

// fdOf returns the directory's fd in layer, or -1.
func (n *node) fdOf(layer int) int {
	for _, d := range n.layerDirs() {
		if d.Layer == layer {
			return d.Fd
		}
	}
	return -1
}

func (n *node) inUpper() bool {
	if n.dir {
		d := n.layerDirs()
		return len(d) > 0 && d[0].Layer == upperLayer
	}
	return n.home().layer == upperLayer
}

// topLayer is the layer whose copy of the entry is shown.
func (n *node) topLayer() int {
	if n.dir {
		return n.layerDirs()[0].Layer
	}
	return n.home().layer
}

// merged reports whether a directory merges an upper and a lower copy.
func (n *node) merged() bool { return len(n.layerDirs()) > 1 }

// parentNode returns the name and parent of n, or ENOENT once n has no
// name left (unlinked while open). Callers hold renameMu.
func (n *node) parentNode() (string, *node, syscall.Errno) {
	name, p := n.Parent()
	if p == nil {
		return "", nil, syscall.ENOENT
	}
	return name, p.Operations().(*node), 0
}

// loc returns where the entry's top copy is reached: a directory's own
// O_PATH fd (Name ""), the index entry of an indexed file, its name in
// its parent's copy in its layer, or, once it has no name, the
// descriptor it kept. Callers hold renameMu.
func (n *node) loc() (at.Loc, syscall.Errno) {
	if n.dir {
		return at.Loc{Dir: n.layerDirs()[0].Fd}, 0
	}
	h := n.home()
	if h.index != "" {
		return at.Loc{Dir: n.u.index, Name: h.index}, 0 // one inode for all its names
	}
	name, p, errno := n.parentNode()
	if errno != 0 {
		if h.anon > 0 {
			return at.Loc{Dir: h.anon}, 0
		}
		return at.Loc{}, errno
	}
	fd := p.fdOf(h.layer)
	if fd < 0 {
		return at.Loc{}, syscall.EIO
	}
	return at.Loc{Dir: fd, Name: name}, 0
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
	h := n.home()
	for _, d := range h.dirs {
		n.u.release(d.Fd)
	}
	for _, fd := range []int{h.anon, h.dataFd} {
		if fd > 0 {
			n.u.release(fd)
		}
	}
	n.move(func(h *home) { h.dirs, h.anon, h.dataFd = nil, 0, 0 })
}

// homeOf is where a found entry lives; it takes over e's descriptors.
func homeOf(e *merge.Entry, index string, copies uint64) *home {
	h := &home{dirs: e.Dirs, layer: e.Layer, meta: e.Metacopy, dataLayer: e.DataLayer, dataFd: e.DataFd, copies: copies}
	if index != "" {
		h.index, h.layer = index, upperLayer
	}
	e.Dirs, e.DataFd = nil, 0
	return h
}

// newChild makes (or finds) the node for entry e, found at name in d, and
// fills attr. It takes over (or releases) e's descriptors.
func (d *node) newChild(ctx context.Context, name string, e merge.Entry, index string, attr *fuse.Attr) *fs.Inode {
	// The node the kernel already has for this name stays the node of
	// the entry: a copy-up changes where an entry lives, never which
	// node it is (a lower hard link's copy, say, has a new identity on
	// disk, but its node keeps the kernel's page cache).
	if in := d.GetChild(name); in != nil {
		if old := in.Operations().(*node); old.dir == e.IsDir() && (old.dir || old.topLayer() == e.Layer) && !old.superseded.Load() && !old.forgotten.Load() {
			d.u.stack.Close(&e)
			d.u.fillAttr(attr, &e.Stat, old.dir && old.merged())
			attr.Ino = in.StableAttr().Ino
			return in
		}
	}
	ch := &node{u: d.u, dir: e.IsDir()}
	ino, gen := d.u.identity(e.Layer, at.Loc{Dir: d.fdOf(e.Layer), Name: name}, &e.Stat)
	if !ch.dir && e.Layer != upperLayer && e.Stat.Nlink > 1 && d.u.index < 0 {
		// Without the index, lower hard links are separate entries
		// until copy-up (as in kernel overlay with index=off): keep
		// their nodes apart. With it they are one node.
		h := fnv.New64a()
		h.Write([]byte(name))
		gen ^= h.Sum64() ^ d.StableAttr().Ino
	}
	merged := len(e.Dirs) > 1
	st := e.Stat
	ch.h.Store(homeOf(&e, index, 0))
	in := d.NewInode(ctx, ch, fs.StableAttr{Mode: uint32(st.Mode) & unix.S_IFMT, Ino: ino, Gen: gen})
	if old := in.Operations().(*node); old != ch {
		// An existing node won. If the kernel had forgotten it, it is
		// being revived: it gets the descriptors just opened.
		old.mu.Lock()
		if old.forgotten.Load() {
			nh := *ch.home()
			old.move(func(h *home) {
				copies := h.copies
				*h = nh
				h.copies = copies
			})
			old.forgotten.Store(false)
		} else {
			if index != "" && !old.dir && old.home().index == "" {
				old.move(func(h *home) { h.index, h.layer = index, upperLayer })
			}
			ce := merge.Entry{Dirs: ch.home().dirs, DataFd: ch.home().dataFd}
			d.u.stack.Close(&ce)
		}
		old.mu.Unlock()
	}
	d.u.fillAttr(attr, &st, merged)
	attr.Ino = ino
	return in
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
