package unionfs

import (
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// POSIX ACLs. The kernel checks them (FUSE_POSIX_ACL) from the
// system.posix_acl_* xattrs, which the layers store and copy-up copies
// like any other; the upper filesystem keeps an ACL's mask in step with
// chmod. What is left to layerfs is inheritance: a new entry gets its
// directory's default ACL from the upper filesystem, which must see the
// directory it is made in.

const aclDefault = "system.posix_acl_default"

// hasDefaultACL reports whether the directory dirfd has a default ACL.
func hasDefaultACL(dirfd int) bool {
	return at.HasXattr(at.Loc{Dir: dirfd}, aclDefault)
}

// inheritingDir returns where an entry of the upper directory up is to be
// built in the work dir, so that it inherits up's default ACL as if made
// in up: the work dir itself where up has none, else a private
// directory in it carrying up's default ACL. done removes that.
func (u *union) inheritingDir(up int) (dir int, done func(), errno syscall.Errno) {
	if !u.acl {
		return u.work, func() {}, 0
	}
	acl, err := at.GetXattr(at.Loc{Dir: up}, aclDefault)
	if err != nil {
		return u.work, func() {}, 0
	}
	sub := at.Loc{Dir: u.work, Name: at.TempName()}
	if err := unix.Mkdirat(sub.Dir, sub.Name, 0o700); err != nil {
		return -1, nil, fs.ToErrno(err)
	}
	fd, err := at.Open(sub, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == nil {
		if err = at.SetXattr(at.Loc{Dir: fd}, aclDefault, acl, 0); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		at.RemoveAll(sub)
		return -1, nil, fs.ToErrno(err)
	}
	return fd, func() { unix.Close(fd); at.RemoveAll(sub) }, 0
}
