package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

func (d *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := d.u.checkNameLen(name); errno != 0 {
		return nil, errno
	}
	if whiteout.IsMarkerName(name) {
		return nil, syscall.ENOENT
	}
	d.u.renameMu.RLock()
	defer d.u.renameMu.RUnlock()
	return d.lookup(ctx, name, out)
}

// lookup resolves name in d and makes its node. Callers hold renameMu.
func (d *node) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	e, errno := d.find(name)
	if errno != 0 {
		return nil, errno
	}
	index := d.findIndex(&e, name)
	return d.newChild(ctx, name, e, index, &out.Attr), 0
}

// find resolves name in the merged directory d (the one merge rule).
func (d *node) find(name string) (merge.Entry, syscall.Errno) {
	e, err := d.u.stack.Resolve(d.layerDirs(), name)
	return e, fs.ToErrno(err)
}

// probe is find with what a change of the name needs to know.
func (d *node) probe(name string) (merge.Probe, syscall.Errno) {
	p, err := d.u.stack.Probe(d.layerDirs(), name)
	return p, fs.ToErrno(err)
}

// child returns the node of an existing entry of d. The kernel looks both
// names of a rename up first, so the nodes exist; otherwise ESTALE makes
// it look again.
func (d *node) child(name string) (*node, syscall.Errno) {
	if in := d.GetChild(name); in != nil {
		if n := in.Operations().(*node); !n.forgotten.Load() {
			return n, 0
		}
	}
	return nil, syscall.ESTALE
}

// knownChild returns the node the kernel has for name in d, or nil.
func (d *node) knownChild(name string) *node {
	if in := d.GetChild(name); in != nil {
		return in.Operations().(*node)
	}
	return nil
}

// isReg reports whether a stat describes a regular file.
func isReg(x *unix.Statx_t) bool { return x.Mode&unix.S_IFMT == unix.S_IFREG }
