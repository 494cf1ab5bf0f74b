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

// A rename runs in phases: resolve (what is at both names, asked once),
// check (every refusal, before anything changes), prepare (copy-ups and
// records that leave the merged view as it was), then commit (the one
// rename in the upper layer, after which the change is made).

// renameOp is one rename or exchange, filled by its phases.
type renameOp struct {
	flags    uint32
	src, dst renameEnd
	// redirect: the source is a directory with a lower part; it moves in
	// O(1), its upper copy recording where that part lives.
	redirect bool
}

// renameEnd is one side of a rename.
type renameEnd struct {
	dir  *node
	name string
	n    *node       // the node at the name; nil where nothing is (dst only)
	at   merge.Probe // what the layers show at the name
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
	d.u.renameMu.Lock()
	defer d.u.renameMu.Unlock()
	op := &renameOp{flags: flags, src: renameEnd{dir: d, name: name}, dst: renameEnd{dir: nd, name: newName}}
	defer op.close()
	if errno := op.resolveLocked(); errno != 0 {
		return errno
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		return op.exchangeLocked(ctx)
	}
	if errno := op.checkLocked(); errno != 0 {
		return errno
	}
	if op.dst.n == op.src.n {
		return 0 // two names of one file: nothing to do
	}
	if errno := op.prepareLocked(ctx); errno != 0 {
		return errno
	}
	return op.commitLocked()
}

// resolveLocked asks once what is at both names.
// Preconditions: renameMu held for writing (every *Locked helper here).
func (op *renameOp) resolveLocked() syscall.Errno {
	var errno syscall.Errno
	s, t := &op.src, &op.dst
	if s.n, errno = s.dir.child(s.name); errno != 0 {
		return errno
	}
	if s.at, errno = s.dir.probe(s.name); errno != 0 {
		return errno
	}
	if t.at, errno = t.dir.probe(t.name); errno != 0 {
		return errno
	}
	if t.at.Exists {
		if t.n, errno = t.dir.child(t.name); errno != 0 {
			return errno
		}
	}
	op.redirect = s.n.dir && !s.n.pureUpper()
	return 0
}

func (op *renameOp) close() {
	for _, e := range []*renameEnd{&op.src, &op.dst} {
		if e.dir != nil {
			e.dir.u.stack.Close(&e.at.Entry)
		}
	}
}

// checkLocked refuses what a rename must refuse, changing nothing.
func (op *renameOp) checkLocked() syscall.Errno {
	s, t := op.src.n, op.dst.n
	if t != nil {
		if op.flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		if t == s {
			return 0
		}
		if t.dir && !s.dir {
			return syscall.EISDIR
		}
		if !t.dir && s.dir {
			return syscall.ENOTDIR
		}
	}
	if op.redirect && !s.u.redirectDir {
		return syscall.EXDEV // redirect_dir=off: mv copies instead
	}
	if t != nil && t.dir {
		return s.u.checkEmpty(t.layerDirs())
	}
	return 0
}

// prepareLocked brings both ends to the upper layer and records what the
// move needs, leaving the merged view as it was.
func (op *renameOp) prepareLocked(ctx context.Context) syscall.Errno {
	s, t := &op.src, &op.dst
	u := s.dir.u
	if t.n != nil {
		t.n.mu.Lock()
		t.n.keepForOpeners()
		t.n.mu.Unlock()
	}
	if errno := s.n.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	if errno := t.dir.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	// A name of an indexed file moves as an upper name; a replaced one
	// leaves the union as one (index.go).
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
	if op.redirect {
		if errno := s.n.setRedirect(t.dir == s.dir); errno != 0 {
			return errno
		}
	}
	if t.dir != s.dir {
		t.dir.markImpure()
	}
	if t.n != nil && t.n.dir && t.n.inUpper() {
		// The target's upper copy may hold whiteouts; the rename needs
		// it truly empty. Its lower part stays hidden by what arrives.
		tmp := at.Loc{Dir: u.work, Name: at.TempName()}
		if err := unix.Renameat(t.dir.fdOf(upperLayer), t.name, tmp.Dir, tmp.Name); err != nil {
			return fs.ToErrno(err)
		}
		defer at.RemoveAll(tmp)
	}
	if s.n.dir && !op.redirect && (t.at.Below || t.dir.merged()) && !s.n.opaque() {
		// As the kernel: a directory moved into a merged directory is
		// made opaque, so it never merges with a lower one of its name.
		if err := s.n.markOpaque(); err != nil {
			return fs.ToErrno(err)
		}
	}
	return 0
}

// commitLocked is the rename in the upper layer: after it, the move is
// made. A whiteout stays at the old name where a lower layer shows it.
func (op *renameOp) commitLocked() syscall.Errno {
	s, t := &op.src, &op.dst
	from := at.Loc{Dir: s.dir.fdOf(upperLayer), Name: s.name}
	to := at.Loc{Dir: t.dir.fdOf(upperLayer), Name: t.name}
	if s.n.dir && t.at.Whiteout == whiteout.CharWhiteout {
		// A directory cannot replace a device: swap with the whiteout,
		// which then marks the old name if that is needed.
		if err := unix.Renameat2(from.Dir, from.Name, to.Dir, to.Name, unix.RENAME_EXCHANGE); err != nil {
			return fs.ToErrno(err)
		}
		if !s.at.Below {
			unix.Unlinkat(from.Dir, from.Name, 0)
		}
		return 0
	}
	if s.at.Below {
		s.dir.u.stats.whiteouts.Add(1)
		if err := whiteout.RenameWhiteout(from, to); err != nil {
			return fs.ToErrno(err)
		}
	} else if err := unix.Renameat(from.Dir, from.Name, to.Dir, to.Name); err != nil {
		return fs.ToErrno(err)
	}
	if t.at.Whiteout == whiteout.FileWhiteout {
		unix.Unlinkat(to.Dir, whiteout.Prefix+to.Name, 0)
	}
	if t.n != nil && !t.n.dir {
		s.dir.u.dropIndexIfUnused(t.n)
	}
	return 0
}

// exchangeLocked swaps two existing entries (RENAME_EXCHANGE). Both names
// stay occupied, so no whiteout is needed; a directory arriving where a
// lower layer has a directory is made opaque so the two do not merge.
func (op *renameOp) exchangeLocked(ctx context.Context) syscall.Errno {
	s, t := &op.src, &op.dst
	if t.n == nil {
		return syscall.ENOENT
	}
	tRedirect := t.n.dir && !t.n.pureUpper()
	if (op.redirect || tRedirect) && !s.dir.u.redirectDir {
		return syscall.EXDEV
	}
	// prepare
	for _, n := range []*node{s.n, t.n, t.dir} {
		if errno := n.copyUp(ctx, withData); errno != 0 {
			return errno
		}
	}
	for _, e := range []*renameEnd{s, t} {
		if !e.n.dir {
			if errno := e.dir.linkUp(ctx, e.name, e.n); errno != 0 {
				return errno
			}
		}
	}
	samedir := t.dir == s.dir
	if op.redirect {
		if errno := s.n.setRedirect(samedir); errno != 0 {
			return errno
		}
	}
	if tRedirect {
		if errno := t.n.setRedirect(samedir); errno != 0 {
			return errno
		}
	}
	// commit
	if err := unix.Renameat2(s.dir.fdOf(upperLayer), s.name, t.dir.fdOf(upperLayer), t.name, unix.RENAME_EXCHANGE); err != nil {
		return fs.ToErrno(err)
	}
	if !samedir {
		s.dir.markImpure()
		t.dir.markImpure()
	}
	if s.n.dir && !op.redirect && (t.at.Below || t.dir.merged()) && !s.n.opaque() {
		s.n.markOpaque()
	}
	if t.n.dir && !tRedirect && (s.at.Below || s.dir.merged()) && !t.n.opaque() {
		t.n.markOpaque()
	}
	return 0
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
