package unionfs

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup"
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
// union shows is kept as the kernel keeps it: an "overlay.nlink" xattr on
// the index inode, "U+N" meaning the upper inode's link count plus N.

// indexName returns the index entry name of the lower file dirfd/name,
// or "" where the filesystem has no file handles.
func indexName(dirfd int, name string) string {
	if o := encodeOrigin(dirfd, name); o != nil {
		return hex.EncodeToString(o)
	}
	return ""
}

// hasIndex reports whether the index holds an entry named hexName.
func (u *union) hasIndex(hexName string) bool {
	var st unix.Stat_t
	return u.index >= 0 && unix.Fstatat(u.index, hexName, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

func (n *node) indexName() string {
	if p := n.idx.Load(); p != nil {
		return *p
	}
	return ""
}

// findIndex notes in f that the regular file it found (with several
// links) is a name of an indexed inode, and shows the index inode.
func (d *node) findIndex(f *found, name string) {
	var hexName string
	if f.layer == upperLayer {
		o, err := copyup.GetXattr(procPath(d.fdOf(upperLayer), name), d.u.ns.Name("origin"))
		if err != nil {
			return
		}
		hexName = hex.EncodeToString(o)
	} else {
		hexName = indexName(d.fdOf(f.layer), name)
	}
	if hexName == "" || !d.u.hasIndex(hexName) {
		return
	}
	var x unix.Statx_t
	if statxAt(d.u.index, hexName, &x) != nil {
		return
	}
	if f.layer == upperLayer && x.Ino != f.st.Ino {
		return // an upper file that merely came from that inode
	}
	x.Nlink = d.u.unionNlink(hexName, x.Nlink)
	f.index, f.st.Nlink = hexName, x.Nlink
	if f.layer != upperLayer {
		// An alias: the index inode is what the name shows.
		ino := f.st.Ino
		f.st = x
		f.st.Ino = ino
	}
}

// hasLinks reports whether the lower regular file p/name has several
// names.
func (n *node) hasLinks(p *node, name string) bool {
	var st unix.Stat_t
	fd := p.fdOf(n.topLayer())
	return fd >= 0 && unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink > 1
}

// copyUpIndex copies the lower file p/name (one of several names of its
// inode) into the index, unless an earlier copy-up did, and links that
// name into the upper dir too: the upper dir then shows the change under
// at least one name (what podman diff and commit read, and a kernel mount
// without index). Other names are linked up when they are renamed or
// removed. ENOTSUP: the layer has no file handles, the caller copies as
// without index.
func (n *node) copyUpIndex(ctx context.Context, p *node, name string, how copyMode) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inUpper() {
		return 0
	}
	src := copyup.Loc{Dir: p.fdOf(n.topLayer()), Name: name}
	var st unix.Stat_t
	if err := unix.Fstatat(src.Dir, src.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	origin := encodeOrigin(src.Dir, src.Name)
	if origin == nil {
		return syscall.ENOTSUP
	}
	hexName := hex.EncodeToString(origin)
	if !n.u.hasIndex(hexName) {
		opt := copyup.Options{
			NoData:    how == noData,
			Fsync:     n.u.fsync,
			SkipXattr: whiteout.IsPrivateXattr,
			KeepOwner: n.u.chownNew,
			SetXattrs: map[string][]byte{n.u.ns.Name("origin"): origin},
		}
		// The union shows all of its lower names; the new inode has
		// one link, the index entry.
		opt.SetXattrs[n.u.ns.Name("nlink")] = []byte(fmt.Sprintf("U%+d", int(st.Nlink)-1))
		cst, err := copyup.Entry(src, copyup.Loc{Dir: n.u.index, Name: hexName}, n.u.work, opt)
		if err != nil && err != unix.EEXIST {
			return fs.ToErrno(err)
		}
		n.u.stats.copyUps.Add(1)
		n.u.stats.copyUpBytes.Add(uint64(cst.Size))
	}
	n.idx.Store(&hexName)
	n.layer.Store(upperLayer)
	n.copyups.Add(1)
	return p.linkUp(ctx, name, n)
}

// linkUp makes sure the name d/name of the indexed node n is in the upper
// dir, as a link to the index inode: the union's count of names does not
// change, the upper inode's does.
func (d *node) linkUp(ctx context.Context, name string, n *node) syscall.Errno {
	hexName := n.indexName()
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
	var st unix.Stat_t
	if unix.Fstatat(up, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return 0
	}
	// A copy-up is no change the user made: the parent keeps its times.
	var pst unix.Stat_t
	keepTimes := unix.Fstat(up, &pst) == nil
	d.u.nlinkMu.Lock()
	defer d.u.nlinkMu.Unlock()
	if err := unix.Linkat(d.u.index, hexName, up, name, 0); err != nil {
		return fs.ToErrno(err)
	}
	d.u.addNlink(hexName, -1)
	d.markImpure()
	if keepTimes {
		unix.UtimesNanoAt(unix.AT_FDCWD, procPath(up, ""), []unix.Timespec{pst.Atim, pst.Mtim}, 0)
	}
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
	v, err := copyup.GetXattr(procPath(u.index, hexName), u.ns.Name("nlink"))
	if err != nil || len(v) < 2 {
		return 0, 0, false
	}
	d, err := strconv.Atoi(string(v[1:]))
	return v[0], d, err == nil
}

// addNlink changes the record of how many names the union shows beside
// the upper links. Callers hold nlinkMu.
func (u *union) addNlink(hexName string, by int) {
	base, delta, ok := u.readNlink(hexName)
	if !ok || base != 'U' {
		return // a kernel "L" record counts from the lower inode: left as is
	}
	unix.Setxattr(procPath(u.index, hexName), u.ns.Name("nlink"), []byte(fmt.Sprintf("U%+d", delta+by)), 0)
}

// ensureNamed prepares the removal or replacement of the name d/name of
// a regular file with several names: the inode goes to the index and the
// name into the upper dir, so that its other names keep their data and
// count one name less.
func (d *node) ensureNamed(ctx context.Context, name string, f *found) syscall.Errno {
	if d.u.index < 0 || f.dirs != nil || f.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	if f.index == "" && (f.layer == upperLayer || f.st.Nlink <= 1) {
		return 0
	}
	c := d.GetChild(name)
	if c == nil {
		return 0
	}
	n := c.Operations().(*node)
	if errno := n.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if errno := d.linkUp(ctx, name, n); errno != 0 {
		return errno
	}
	f.layer = upperLayer
	return 0
}

// dropIndexIfUnused removes the index entry of n once the union shows no
// name of it any more.
func (u *union) dropIndexIfUnused(n *node) {
	hexName := n.indexName()
	if hexName == "" {
		return
	}
	u.nlinkMu.Lock()
	defer u.nlinkMu.Unlock()
	var x unix.Statx_t
	if statxAt(u.index, hexName, &x) == nil && u.unionNlink(hexName, x.Nlink) == 0 && x.Nlink == 1 {
		unix.Unlinkat(u.index, hexName, 0)
	}
}

// openIndex makes and opens W/index, the kernel's place for it.
func (u *union) openIndex(workDir int) {
	if err := unix.Mkdirat(workDir, "index", 0o700); err != nil && err != unix.EEXIST {
		return
	}
	if fd, err := unix.Openat(workDir, "index", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		u.index = fd
	}
}
