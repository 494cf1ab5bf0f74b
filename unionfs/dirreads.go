package unionfs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Listings without OPENDIR. Where the kernel offers it
// (FUSE_NO_OPENDIR_SUPPORT), layerfs answers the first OPENDIR with
// ENOSYS: the kernel then opens and releases directories without asking,
// keeps their listings cached until something changes them, and sends
// READDIR without a handle when it needs one. Those are served here from
// a handle the server opens itself, one per directory, kept for the next
// chunk of the same listing: a listing read from its start gets a fresh
// one (a new snapshot of the merged directory).

// maxDirReads bounds the directories with a kept handle; the oldest goes.
const maxDirReads = 128

type dirReads struct {
	// server tells what the kernel offered at INIT.
	server *fuse.Server

	mu    sync.Mutex
	dirs  map[uint64]*dirRead // by node id
	order []uint64            // node ids, oldest first
}

// dirRead is a directory's kept handle. mu is held while the handle is
// read or released: the bridge does not guard a handle the kernel could
// not be using, and these are ours.
type dirRead struct {
	mu sync.Mutex
	fh uint64 // 0 once released
}

// on reports whether the kernel takes an ENOSYS to OPENDIR as the sign
// to stop sending it.
func (d *dirReads) on() bool {
	return d != nil && d.server != nil && d.server.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0
}

// read serves a handle-less READDIR or READDIRPLUS with read (the
// bridge's), through the directory's kept handle.
func (d *dirReads) read(raw fuse.RawFileSystem, c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList,
	read func(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status) fuse.Status {
	e, st := d.entry(raw, c, in)
	if st != fuse.OK {
		return st
	}
	e.mu.Lock()
	if e.fh == 0 { // released meanwhile (evicted, forgotten)
		e.mu.Unlock()
		return d.read(raw, c, &fuse.ReadIn{InHeader: in.InHeader, Offset: in.Offset, Size: in.Size, ReadFlags: in.ReadFlags}, out, read)
	}
	in.Fh = e.fh
	st = read(c, in, out)
	e.mu.Unlock()
	if st != fuse.OK || out.Offset == in.Offset {
		d.drop(raw, in.NodeId, e) // the end of the listing, or a failure
	}
	return st
}

// entry returns the kept handle of the directory in.NodeId, opening a
// fresh one for a listing read from its start.
func (d *dirReads) entry(raw fuse.RawFileSystem, c <-chan struct{}, in *fuse.ReadIn) (*dirRead, fuse.Status) {
	d.mu.Lock()
	e := d.dirs[in.NodeId]
	d.mu.Unlock()
	if e != nil && in.Offset != 0 {
		return e, fuse.OK
	}
	var out fuse.OpenOut
	if st := raw.OpenDir(c, &fuse.OpenIn{InHeader: in.InHeader}, &out); st != fuse.OK {
		return nil, st
	}
	fresh := &dirRead{fh: out.Fh}
	d.mu.Lock()
	if d.dirs == nil {
		d.dirs = map[uint64]*dirRead{}
	}
	old := d.dirs[in.NodeId]
	d.dirs[in.NodeId] = fresh
	if old == nil {
		d.order = append(d.order, in.NodeId)
	}
	var evicted []*dirRead
	var evictedIDs []uint64
	for len(d.order) > maxDirReads {
		id := d.order[0]
		d.order = d.order[1:]
		evicted, evictedIDs = append(evicted, d.dirs[id]), append(evictedIDs, id)
		delete(d.dirs, id)
	}
	d.mu.Unlock()
	if old != nil {
		release(raw, in.NodeId, old)
	}
	for i, e := range evicted {
		release(raw, evictedIDs[i], e)
	}
	return fresh, fuse.OK
}

// drop releases e, the kept handle of directory id, if it is still kept.
func (d *dirReads) drop(raw fuse.RawFileSystem, id uint64, e *dirRead) {
	d.mu.Lock()
	kept := d.dirs[id] == e
	if kept {
		delete(d.dirs, id)
		for i, o := range d.order {
			if o == id {
				d.order = append(d.order[:i], d.order[i+1:]...)
				break
			}
		}
	}
	d.mu.Unlock()
	if kept {
		release(raw, id, e)
	}
}

// forget releases the kept handle of directory id before the kernel's
// FORGET lets the bridge drop the node.
func (d *dirReads) forget(raw fuse.RawFileSystem, id uint64) {
	d.mu.Lock()
	e := d.dirs[id]
	d.mu.Unlock()
	if e != nil {
		d.drop(raw, id, e)
	}
}

// release gives e's handle back to the bridge once no read uses it.
func release(raw fuse.RawFileSystem, id uint64, e *dirRead) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fh != 0 {
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: e.fh})
		e.fh = 0
	}
}
