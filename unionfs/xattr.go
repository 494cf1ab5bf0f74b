package unionfs

import (
	"context"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
)

var (
	_ fs.NodeGetxattrer    = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeListxattrer   = (*node)(nil)
)

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if whiteout.IsPrivateXattr(attr) {
		return 0, syscall.ENODATA
	}
	if attr == StatusXattr && n.IsRoot() {
		b := n.u.status()
		if len(dest) == 0 {
			return uint32(len(b)), 0
		}
		if len(dest) < len(b) {
			return uint32(len(b)), syscall.ERANGE
		}
		return uint32(copy(dest, b)), 0
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	l, errno := n.loc()
	if errno != 0 {
		return 0, errno
	}
	sz, err := at.GetXattrInto(l, attr, dest)
	if err == nil && sz <= len(dest) && isACL(attr) {
		n.u.ids.showACL(dest[:sz])
	}
	return uint32(sz), fs.ToErrno(err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	l, errno := n.loc()
	if errno != 0 {
		return 0, errno
	}
	names, err := at.ListXattrs(l)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	// trusted.* names are listed only to the privileged, as a local
	// filesystem lists them; the server reads them as root for anyone.
	caller, _ := fuse.FromContext(ctx)
	privileged := caller != nil && caller.Uid == 0
	var buf []byte
	for _, name := range names {
		if !whiteout.IsPrivateXattr(name) && (privileged || !strings.HasPrefix(name, "trusted.")) {
			buf = append(append(buf, name...), 0)
		}
	}
	if len(dest) == 0 {
		return uint32(len(buf)), 0
	}
	if len(dest) < len(buf) {
		return 0, syscall.ERANGE
	}
	return uint32(copy(dest, buf)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if isACL(attr) && n.u.ids != nil {
		data = append([]byte(nil), data...)
		if errno := n.u.ids.storeACL(data); errno != 0 {
			return errno
		}
	}
	return n.changeXattr(ctx, attr, func(l at.Loc) error {
		var drop func()
		if attr == aclAccess {
			drop = n.u.aclSgidDropper(ctx, l)
		}
		err := at.SetXattr(l, attr, data, int(flags))
		if err == nil && drop != nil {
			drop()
		}
		return err
	})
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !n.inUpper() && !whiteout.IsPrivateXattr(attr) {
		// As the kernel: no copy-up to remove what is not there.
		if _, errno := n.Getxattr(ctx, attr, nil); errno != 0 {
			return errno
		}
	}
	return n.changeXattr(ctx, attr, func(l at.Loc) error {
		return at.RemoveXattr(l, attr)
	})
}

func (n *node) changeXattr(ctx context.Context, attr string, change func(l at.Loc) error) syscall.Errno {
	if whiteout.IsPrivateXattr(attr) || attr == StatusXattr && n.IsRoot() {
		return syscall.EPERM
	}
	if !n.u.writable() {
		return syscall.EROFS
	}
	n.u.renameMu.RLock()
	defer n.u.renameMu.RUnlock()
	if errno := n.copyUp(ctx, metaOnly); errno != 0 {
		return errno
	}
	l, errno := n.loc()
	if errno != 0 {
		return errno
	}
	return fs.ToErrno(change(l))
}
