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

var (
	_ fs.NodeUnlinker = (*node)(nil)
	_ fs.NodeRmdirer  = (*node)(nil)
)

func (d *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, false)
}

func (d *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.remove(ctx, name, true)
}

// remove unlinks or rmdirs name: resolve, refuse, copy the parent up,
// then the one change in the upper layer.
func (d *node) remove(ctx context.Context, name string, isDir bool) syscall.Errno {
	if !d.u.writable() {
		return syscall.EROFS
	}
	if errno := d.u.checkNameLen(name); errno != 0 {
		return errno
	}
	if whiteout.IsMarkerName(name) {
		return syscall.ENOENT
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	// Check before copying anything up: a refused removal changes nothing.
	p, errno := d.probe(name)
	if errno != 0 {
		return errno
	}
	defer d.u.stack.Close(&p.Entry)
	if errno := checkRemove(d.u, &p, isDir); errno != 0 {
		return errno
	}
	if errno := d.copyUp(ctx, withData); errno != 0 {
		return errno
	}
	// One name of a file with several: its other names keep the data.
	if errno := d.ensureNamed(ctx, name, &p); errno != 0 {
		return errno
	}
	victim := d.knownChild(name)
	if victim != nil {
		// Its copy-up cannot interleave with its removal.
		victim.mu.Lock()
		defer victim.mu.Unlock()
		if victim.inUpper() && victim.home().index == "" {
			p.Layer = upperLayer // copied up since we looked
		}
		victim.keepForOpeners()
		if !isDir {
			defer d.u.dropIndexIfUnused(victim)
		}
	}
	return d.removeUpper(name, &p)
}

// checkRemove refuses what rmdir or unlink of p must refuse: a name of
// the other kind, a directory that is not empty.
func checkRemove(u *union, p *merge.Probe, isDir bool) syscall.Errno {
	if !p.Exists {
		return syscall.ENOENT
	}
	if isDir != p.IsDir() {
		if isDir {
			return syscall.ENOTDIR
		}
		return syscall.EISDIR
	}
	if isDir {
		return u.checkEmpty(p.Dirs)
	}
	return 0
}

// checkEmpty answers ENOTEMPTY for a merged directory that shows entries
// (whiteouts do not count).
func (u *union) checkEmpty(dirs []merge.Dir) syscall.Errno {
	ents, err := u.stack.List(dirs)
	if err != nil {
		return fs.ToErrno(err)
	}
	if len(ents) > 0 {
		return syscall.ENOTEMPTY
	}
	return 0
}

// removeUpper makes name (what p found) vanish from the merged view with
// one change in the upper copy of d: a whiteout over a lower entry, the
// upper entry swapped for a whiteout where a lower one would show
// through, else the upper entry removed.
// Preconditions: renameMu held, d in the upper layer.
func (d *node) removeUpper(name string, p *merge.Probe) syscall.Errno {
	up := d.fdOf(upperLayer)
	if p.Layer != upperLayer {
		d.u.stats.whiteouts.Add(1)
		return fs.ToErrno(whiteout.Make(up, name))
	}
	tmp := at.Loc{Dir: d.u.work, Name: at.TempName()}
	if p.Below {
		d.u.stats.whiteouts.Add(1)
		if err := whiteout.RenameWhiteout(at.Loc{Dir: up, Name: name}, tmp); err != nil {
			return fs.ToErrno(err)
		}
		return fs.ToErrno(at.RemoveAll(tmp))
	}
	if !p.IsDir() {
		return fs.ToErrno(unix.Unlinkat(up, name, 0))
	}
	// A pure upper directory may still hold whiteouts: move it out of
	// sight first, then delete it.
	if err := unix.Renameat(up, name, tmp.Dir, tmp.Name); err != nil {
		return fs.ToErrno(err)
	}
	return fs.ToErrno(at.RemoveAll(tmp))
}
