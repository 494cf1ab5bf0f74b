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
	fh    map[uint64]uint64 // node id -> the server's own handle
	order []uint64          // node ids, oldest first
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
	fh, st := d.handle(raw, c, in)
	if st != fuse.OK {
		return st
	}
	in.Fh = fh
	st = read(c, in, out)
	if st != fuse.OK || out.Offset == in.Offset {
		d.drop(raw, in.NodeId, fh) // the end of the listing, or a failure
	}
	return st
}

// handle returns the kept handle of the directory in.NodeId, opening a
// fresh one for a listing read from its start.
func (d *dirReads) handle(raw fuse.RawFileSystem, c <-chan struct{}, in *fuse.ReadIn) (uint64, fuse.Status) {
	d.mu.Lock()
	fh, ok := d.fh[in.NodeId]
	d.mu.Unlock()
	if ok && in.Offset != 0 {
		return fh, fuse.OK
	}
	var out fuse.OpenOut
	if st := raw.OpenDir(c, &fuse.OpenIn{InHeader: in.InHeader}, &out); st != fuse.OK {
		return 0, st
	}
	d.mu.Lock()
	old, had := d.fh[in.NodeId]
	if d.fh == nil {
		d.fh = map[uint64]uint64{}
	}
	d.fh[in.NodeId] = out.Fh
	if !had {
		d.order = append(d.order, in.NodeId)
	}
	var evict []uint64
	for len(d.order) > maxDirReads {
		evict = append(evict, d.order[0])
		d.order = d.order[1:]
	}
	evicted := map[uint64]uint64{}
	for _, id := range evict {
		evicted[id] = d.fh[id]
		delete(d.fh, id)
	}
	d.mu.Unlock()
	if had {
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: in.NodeId}, Fh: old})
	}
	for id, h := range evicted {
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: h})
	}
	return out.Fh, fuse.OK
}

// drop releases the kept handle fh of directory id, if it is still kept.
func (d *dirReads) drop(raw fuse.RawFileSystem, id, fh uint64) {
	d.mu.Lock()
	kept, ok := d.fh[id]
	if ok && kept == fh {
		delete(d.fh, id)
		for i, o := range d.order {
			if o == id {
				d.order = append(d.order[:i], d.order[i+1:]...)
				break
			}
		}
	}
	d.mu.Unlock()
	if ok && kept == fh {
		raw.ReleaseDir(&fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: fh})
	}
}

// forget releases the kept handle of directory id before the kernel's
// FORGET lets the bridge drop the node.
func (d *dirReads) forget(raw fuse.RawFileSystem, id uint64) {
	d.mu.Lock()
	fh, ok := d.fh[id]
	d.mu.Unlock()
	if ok {
		d.drop(raw, id, fh)
	}
}
