package unionfs

import (
	"context"
	"path"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

var _ fs.NodeRenamer = (*node)(nil)

// A rename (or exchange) runs in phases: resolve (what is at both names,
// asked once), check (every refusal, before anything changes), prepare
// (copy-ups and records that leave the merged view as it was), then
// commit (the one rename in the upper layer, after which the change is
// made).

// renameOp is one rename or exchange, filled by its phases.
type renameOp struct {
	flags    uint32
	src, dst renameEnd
}

// renameEnd is one side of a rename.
type renameEnd struct {
	dir  *node
	name string
	n    *node       // the node at the name; nil where nothing is (dst only)
	at   merge.Probe // what the layers show at the name
	// redirect: the node is a directory with a lower part that moves
	// away; it moves in O(1), its upper copy recording where that part
	// lives (kernel redirect_dir).
	redirect bool
}

func (op *renameOp) exchange() bool { return op.flags&unix.RENAME_EXCHANGE != 0 }

func (d *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := d.checkRename(name, newName, flags); errno != 0 {
		return errno
	}
	nd, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	d.u.renameMu.Lock()
	defer d.u.renameMu.Unlock()
	op := &renameOp{flags: flags, src: renameEnd{dir: d, name: name}, dst: renameEnd{dir: nd, name: newName}}
	defer op.close()
	if errno := op.resolveLocked(); errno != 0 {
		return errno
	}
	if errno := op.checkLocked(); errno != 0 || op.dst.n == op.src.n {
		return errno // the same file under two names: nothing to do
	}
	if errno := op.prepareLocked(ctx); errno != 0 {
		return errno
	}
	return op.commitLocked()
}

// checkRename refuses what no state of the layers allows.
func (d *node) checkRename(name, newName string, flags uint32) syscall.Errno {
	switch {
	case !d.u.writable():
		return syscall.EROFS
	case whiteout.IsMarkerName(name):
		return syscall.ENOENT
	case whiteout.IsMarkerName(newName):
		return syscall.EINVAL
	case len(name) > d.u.nameMax, len(newName) > d.u.nameMax:
		return syscall.ENAMETOOLONG
	case flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0, flags == unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE:
		return syscall.EINVAL
	}
	return 0
}

// resolveLocked asks once what is at both names.
// Preconditions: renameMu held for writing (every *Locked helper here).
func (op *renameOp) resolveLocked() syscall.Errno {
	var errno syscall.Errno
	for _, e := range []*renameEnd{&op.src, &op.dst} {
		if e.at, errno = e.dir.probe(e.name); errno != 0 {
			return errno
		}
		if e.at.Exists {
			if e.n, errno = e.dir.child(e.name); errno != 0 {
				return errno
			}
		}
	}
	if op.src.n == nil {
		return syscall.ENOENT
	}
	op.src.redirect = op.src.n.dir && !op.src.n.pureUpper()
	op.dst.redirect = op.exchange() && op.dst.n != nil && op.dst.n.dir && !op.dst.n.pureUpper()
	return 0
}

func (op *renameOp) close() {
	for _, e := range []*renameEnd{&op.src, &op.dst} {
		e.dir.u.stack.Close(&e.at.Entry)
	}
}

// checkLocked refuses what a rename must refuse, changing nothing, in
// the order the kernel checks.
func (op *renameOp) checkLocked() syscall.Errno {
	s, t := op.src.n, op.dst.n
	if op.exchange() && t == nil {
		return syscall.ENOENT
	}
	if !op.exchange() && t != nil {
		switch {
		case op.flags&unix.RENAME_NOREPLACE != 0:
			return syscall.EEXIST
		case t == s:
			return 0
		case t.dir && !s.dir:
			return syscall.EISDIR
		case !t.dir && s.dir:
			return syscall.ENOTDIR
		}
	}
	if (op.src.redirect || op.dst.redirect) && !s.u.redirectDir {
		return syscall.EXDEV // redirect_dir=off: mv copies instead
	}
	if !op.exchange() && t != nil && t.dir {
		return s.u.checkEmpty(t.layerDirs())
	}
	return 0
}

// prepareLocked brings both ends to the upper layer and records what the
// move needs, leaving the merged view as it was.
func (op *renameOp) prepareLocked(ctx context.Context) syscall.Errno {
	s, t := &op.src, &op.dst
	if t.n != nil && !op.exchange() {
		t.n.mu.Lock()
		t.n.keepForOpeners() // it is about to lose this name
		t.n.mu.Unlock()
	}
	ups := []*node{s.n, t.dir}
	if op.exchange() {
		ups = append(ups, t.n)
	}
	for _, n := range ups {
		if errno := n.copyUp(ctx, withData); errno != 0 {
			return errno
		}
	}
	return op.recordLocked(ctx)
}

// recordLocked writes what the layers must know before the move: the
// names of indexed files in the upper layer (a moved name moves as an
// upper name, a replaced one leaves the union as one: index.go), the
// redirects of directories whose lower part stays behind, and where
// inode numbers now come from elsewhere.
func (op *renameOp) recordLocked(ctx context.Context) syscall.Errno {
	s, t := &op.src, &op.dst
	if !s.n.dir {
		if errno := s.dir.linkUp(ctx, s.name, s.n); errno != 0 {
			return errno
		}
	}
	if t.n != nil && !t.n.dir {
		if errno := t.dir.ensureNamed(ctx, t.name, &t.at); errno != 0 {
			return errno
		}
	}
	samedir := s.dir == t.dir
	for _, e := range []*renameEnd{s, t} {
		if e.redirect {
			if errno := e.n.setRedirect(samedir); errno != 0 {
				return errno
			}
		}
	}
	if !samedir {
		t.dir.markImpure()
		if op.exchange() {
			s.dir.markImpure()
		}
	}
	if t.n != nil && t.n.dir && !op.exchange() {
		return t.dir.clearUpperDir(t.name)
	}
	return 0
}

// clearUpperDir removes the upper copy of the directory name of d, which
// is to be replaced: it may hold whiteouts, and a rename needs it truly
// empty. Its lower part stays hidden by what arrives.
func (d *node) clearUpperDir(name string) syscall.Errno {
	up := d.fdOf(upperLayer)
	if !at.Exists(at.Loc{Dir: up, Name: name}) {
		return 0
	}
	tmp := at.Loc{Dir: d.u.work, Name: at.TempName()}
	if err := unix.Renameat(up, name, tmp.Dir, tmp.Name); err != nil {
		return fs.ToErrno(err)
	}
	at.RemoveAll(tmp)
	return 0
}

// commitLocked is the rename in the upper layer: after it, the move is
// made. A whiteout stays at the old name where a lower layer shows it;
// a directory arriving where the layers below show the name is made
// opaque, as the kernel does, so the two never merge.
func (op *renameOp) commitLocked() syscall.Errno {
	s, t := &op.src, &op.dst
	from := at.Loc{Dir: s.dir.fdOf(upperLayer), Name: s.name}
	to := at.Loc{Dir: t.dir.fdOf(upperLayer), Name: t.name}
	var err error
	switch {
	case op.exchange() || s.n.dir && t.at.Whiteout == whiteout.CharWhiteout:
		// A directory cannot replace a device: swap with the
		// whiteout, which then marks the old name if that is needed.
		err = unix.Renameat2(from.Dir, from.Name, to.Dir, to.Name, unix.RENAME_EXCHANGE)
		if err == nil && !op.exchange() && !s.at.Below {
			unix.Unlinkat(from.Dir, from.Name, 0)
		}
	case s.at.Below:
		s.dir.u.stats.whiteouts.Add(1)
		err = whiteout.RenameWhiteout(from, to)
	default:
		err = unix.Renameat(from.Dir, from.Name, to.Dir, to.Name)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	if t.at.Whiteout == whiteout.FileWhiteout {
		unix.Unlinkat(to.Dir, whiteout.Prefix+to.Name, 0)
	}
	op.keepApart(s, t)
	if op.exchange() {
		op.keepApart(t, s)
	} else if t.n != nil && !t.n.dir {
		s.dir.u.dropIndexIfUnused(t.n)
	}
	return 0
}

// keepApart makes the directory that moved from a to b's name opaque
// where the layers below b show that name or b's parent merges, so that
// it never merges with a lower directory there.
func (op *renameOp) keepApart(a, b *renameEnd) {
	if a.n.dir && !a.redirect && (b.at.Below || b.dir.merged()) && !a.n.opaque() {
		a.n.markOpaque()
	}
}

// pureUpper reports whether a directory lives in the upper layer only, so
// that renaming it needs no record of where its lower part was.
func (n *node) pureUpper() bool {
	d := n.layerDirs()
	return len(d) == 1 && d[0].Layer == upperLayer
}

// opaque reports whether a directory's upper copy is marked opaque.
func (n *node) opaque() bool {
	d := n.layerDirs()
	return len(d) > 0 && d[0].Layer == upperLayer && d[0].Opaque
}

// markOpaque marks a directory's upper copy opaque and remembers it.
func (n *node) markOpaque() error {
	d := n.layerDirs()
	if len(d) == 0 || d[0].Layer != upperLayer {
		return syscall.EIO
	}
	if err := whiteout.MakeOpaque(d[0].Fd, n.u.ns); err != nil {
		return err
	}
	n.mu.Lock()
	n.move(func(h *home) {
		h.dirs = append([]merge.Dir{}, h.dirs...)
		h.dirs[0].Opaque = true
	})
	n.mu.Unlock()
	return nil
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
	if len(d) == 0 || d[0].Layer != upperLayer {
		return syscall.EIO
	}
	cur := whiteout.ReadDirMarkers(d[0].Fd).Redirect
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
	if err := at.SetXattr(at.Loc{Dir: d[0].Fd}, s.u.ns.Name(whiteout.Redirect), []byte(r), 0); err != nil {
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
			r = whiteout.ReadDirMarkers(c.layerDirs()[0].Fd).Redirect
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
