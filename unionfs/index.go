package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Hard links across copy-up (kernel overlay's "index" feature).
//
// Names that share an inode in a lower layer are one node, and stay one
// inode after copy-up: the first copy-up of any of them copies the file
// into W/index, named by the hex of its origin record (the kernel's
// format), and links the name it was reached by into the upper dir. Every
// name then reads and writes the index inode: names still only in the
// lower layer find it by their origin on lookup, and get linked into the
// upper dir when they are renamed or removed. The number of names the
// union shows is kept as the kernel keeps it: an overlay "nlink" record
// on the index inode (whiteout.FormatNlink).

// hasIndex reports whether the index holds an entry named hexName.
func (u *union) hasIndex(hexName string) bool {
	return u.index >= 0 && at.Exists(at.Loc{Dir: u.index, Name: hexName})
}

// findIndex returns the index entry a regular file with several links,
// found at name in d, is a name of ("" for none), and makes e show the
// index inode.
func (d *node) findIndex(e *merge.Entry, name string) string {
	if d.u.index < 0 || e.IsDir() || !isReg(&e.Stat) || e.Stat.Nlink <= 1 {
		return ""
	}
	l := at.Loc{Dir: d.fdOf(e.Layer), Name: name}
	var origin []byte
	if e.Layer == upperLayer {
		origin, _ = at.GetXattr(l, d.u.ns.Name(whiteout.Origin))
	} else {
		origin = whiteout.EncodeOrigin(l)
	}
	if len(origin) == 0 {
		return ""
	}
	hexName := whiteout.IndexName(origin)
	idx := at.Loc{Dir: d.u.index, Name: hexName}
	var x unix.Statx_t
	if at.Statx(idx, &x) != nil {
		return ""
	}
	if e.Layer == upperLayer && x.Ino != e.Stat.Ino {
		return "" // an upper file that merely came from that inode
	}
	x.Nlink = d.u.unionNlink(hexName, x.Nlink)
	if e.Layer != upperLayer {
		// An alias: the index inode is what the name shows. Where it
		// holds metadata only, this name's lower file is its data.
		ino, blocks := e.Stat.Ino, e.Stat.Blocks
		e.Stat = x
		e.Stat.Ino = ino
		if whiteout.MayBeMetacopy(&x) && whiteout.IsMetacopy(idx) {
			e.Metacopy, e.DataLayer = true, e.Layer
			e.Stat.Blocks = blocks
		}
	}
	e.Stat.Nlink = x.Nlink
	return hexName
}

// copyUpIndex copies the source of op (one of several names of its
// inode) into the index, unless an earlier copy-up did, and links its
// name into the upper dir too: the upper dir then shows the change under
// at least one name (what podman diff and commit read, and a kernel mount
// without index). Other names are linked up when they are renamed or
// removed. ENOTSUP: the layer has no file handles, the caller copies as
// without index.
// Preconditions: n.mu held, the parent in the upper layer.
func (op *copyUpOp) toIndex(ctx context.Context) syscall.Errno {
	n, u := op.n, op.n.u
	if op.origin == nil {
		return syscall.ENOTSUP
	}
	hexName := whiteout.IndexName(op.origin)
	idx := at.Loc{Dir: u.index, Name: hexName}
	var meta bool
	if !u.hasIndex(hexName) {
		opt := op.options()
		opt.SetXattrs = map[string][]byte{
			u.ns.Name(whiteout.Origin): op.origin,
			// The union shows all of its lower names; the new inode has
			// one link, the index entry.
			u.ns.Name(whiteout.Nlink): whiteout.FormatNlink(int(op.st.Nlink) - 1),
		}
		// Metadata only, as the kernel copies a hard-linked file up
		// with metacopy=on: a chmod, or the removal of one name, leaves
		// the data below.
		if op.metacopy() {
			opt.Metacopy = true
			opt.SetXattrs[u.ns.Name(whiteout.Metacopy)] = []byte{}
		}
		err := op.copy(idx, opt)
		if err != nil && err != unix.EEXIST {
			return fs.ToErrno(err)
		}
		meta = opt.Metacopy
		if err == unix.EEXIST {
			meta = whiteout.IsMetacopy(idx) // made meanwhile
		}
	} else {
		meta = whiteout.IsMetacopy(idx)
	}
	// The data of a metacopy index entry is the lower file copied: held
	// open, since the names the node is reached by may change.
	dataFd := 0
	if meta {
		fd, err := at.Open(op.src, unix.O_PATH)
		if err != nil {
			return fs.ToErrno(err)
		}
		u.hold(fd)
		dataFd = fd
	}
	srcLayer := n.topLayer()
	n.move(func(h *home) {
		h.index, h.layer, h.copies = hexName, upperLayer, h.copies+1
		if dataFd > 0 {
			h.meta, h.dataLayer, h.dataFd = true, srcLayer, dataFd
		}
	})
	return op.parent.linkUp(ctx, op.name, n)
}

// linkUp makes sure the name d/name of the indexed node n is in the upper
// dir, as a link to the index inode: the union's count of names does not
// change, the upper inode's does.
func (d *node) linkUp(ctx context.Context, name string, n *node) syscall.Errno {
	hexName := n.home().index
	if hexName == "" {
		return 0
	}
	// The node's other names may have been copied up through another
	// directory than this one.
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	up := d.fdOf(upperLayer)
	if up < 0 {
		return syscall.EIO
	}
	if at.Exists(at.Loc{Dir: up, Name: name}) {
		return 0
	}
	d.u.nlinkMu.Lock()
	defer d.u.nlinkMu.Unlock()
	errno := d.keepingTimes(func() error {
		return at.Link(at.Loc{Dir: d.u.index, Name: hexName}, at.Loc{Dir: up, Name: name})
	})
	if errno != 0 {
		return errno
	}
	d.u.addNlink(hexName, -1)
	d.markImpure()
	return 0
}

// unionNlink is the number of names the union shows for the index inode
// hexName, whose own link count is upper.
func (u *union) unionNlink(hexName string, upper uint32) uint32 {
	base, delta, ok := u.readNlink(hexName)
	if !ok || base != 'U' {
		return upper - 1 // no record: the names in the upper dir
	}
	if n := int64(upper) + int64(delta); n > 0 {
		return uint32(n)
	}
	return 0
}

func (u *union) readNlink(hexName string) (base byte, delta int, ok bool) {
	v, err := at.GetXattr(at.Loc{Dir: u.index, Name: hexName}, u.ns.Name(whiteout.Nlink))
	if err != nil {
		return 0, 0, false
	}
	return whiteout.ParseNlink(v)
}

// addNlink changes the record of how many names the union shows beside
// the upper links. Preconditions: u.nlinkMu held.
func (u *union) addNlink(hexName string, by int) {
	base, delta, ok := u.readNlink(hexName)
	if !ok || base != 'U' {
		return // a kernel "L" record counts from the lower inode: left as is
	}
	at.SetXattr(at.Loc{Dir: u.index, Name: hexName}, u.ns.Name(whiteout.Nlink), whiteout.FormatNlink(delta+by), 0)
}

// ensureNamed prepares the removal or replacement of the name d/name of
// a regular file with several names (what p found there): the inode goes
// to the index and the name into the upper dir, so that its other names
// keep their data and count one name less; p then says the name is in
// the upper layer.
func (d *node) ensureNamed(ctx context.Context, name string, p *merge.Probe) syscall.Errno {
	if d.u.index < 0 || p.IsDir() || !isReg(&p.Stat) {
		return 0
	}
	n := d.knownChild(name)
	if n == nil || (n.home().index == "" && (p.Layer == upperLayer || p.Stat.Nlink <= 1)) {
		return 0
	}
	// Metadata is enough (where metacopy is on): the data stays with
	// the other names.
	if errno := n.copyUp(ctx, metaOnly); errno != 0 {
		return errno
	}
	if errno := d.linkUp(ctx, name, n); errno != 0 {
		return errno
	}
	p.Layer = upperLayer
	return 0
}

// dropIndexIfUnused removes the index entry of n once the union shows no
// name of it any more.
func (u *union) dropIndexIfUnused(n *node) {
	hexName := n.home().index
	if hexName == "" {
		return
	}
	u.nlinkMu.Lock()
	defer u.nlinkMu.Unlock()
	l := at.Loc{Dir: u.index, Name: hexName}
	var x unix.Statx_t
	if at.Statx(l, &x) == nil && u.unionNlink(hexName, x.Nlink) == 0 && x.Nlink == 1 {
		unix.Unlinkat(l.Dir, l.Name, 0)
	}
}

// openIndex makes and opens W/index, the kernel's place for it.
func (u *union) openIndex(workDir int) {
	if err := unix.Mkdirat(workDir, "index", 0o700); err != nil && err != unix.EEXIST {
		return
	}
	if fd, err := at.Open(at.Loc{Dir: workDir, Name: "index"}, unix.O_RDONLY|unix.O_DIRECTORY); err == nil {
		u.index = fd
	}
}
