package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

var (
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
)

// OpendirHandle lets the kernel cache the listing (FOPEN_CACHE_DIR) across
// opens: every change to the directory goes through this mount, and the
// kernel drops its cache when it sees one.
func (d *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	ents, errno := d.list()
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

// list is the merged listing of d with the inode numbers stat reports:
// a known node's, else a copied-up entry's origin (only an impure upper
// directory holds such entries), else the copy's own.
// Preconditions: renameMu held.
func (d *node) list() ([]fuse.DirEntry, syscall.Errno) {
	dirs := d.layerDirs()
	ents, err := d.u.stack.List(dirs)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	impure := d.u.samefs && len(dirs) > 0 && dirs[0].Layer == upperLayer && d.u.isImpure(dirs[0].Fd)
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		ino := d.u.ino(e.Layer, e.Ino)
		if ch := d.GetChild(e.Name); ch != nil {
			ino = ch.StableAttr().Ino
		} else if impure && e.Layer == upperLayer {
			if o, ok := d.u.originIno(at.Loc{Dir: dirs[0].Fd, Name: e.Name}); ok {
				ino = o // d_ino equals st_ino of a copied-up entry
			}
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Mode: e.Mode(), Ino: ino})
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
