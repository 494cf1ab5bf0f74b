package unionfs

import (
	"encoding/binary"
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

// An ACL xattr holds ids: with uidmapping/gidmapping they are mapped like
// owners, stored ids shown as the mount shows them and the other way.
// Format (the kernel's posix_acl_xattr): a 4-byte header (version 2), then
// 8-byte entries of tag (16 bits), permissions (16 bits) and id (32 bits),
// little endian; the ids of named user and group entries are mapped.
const (
	aclAccess = "system.posix_acl_access"
	aclUser   = 0x02
	aclGroup  = 0x08
)

// isACL reports whether an xattr name is a POSIX ACL.
func isACL(name string) bool { return name == aclAccess || name == aclDefault }

// mapACL rewrites the ids of the ACL value v in place with mapUser and
// mapGroup; a value that is no ACL of the known version is left alone.
func mapACL(v []byte, mapUser, mapGroup func(uint32) (uint32, bool)) syscall.Errno {
	if len(v) < 4 || binary.LittleEndian.Uint32(v) != 2 || (len(v)-4)%8 != 0 {
		return 0
	}
	for e := v[4:]; len(e) >= 8; e = e[8:] {
		tag, id := binary.LittleEndian.Uint16(e), binary.LittleEndian.Uint32(e[4:])
		var ok = true
		switch tag {
		case aclUser:
			id, ok = mapUser(id)
		case aclGroup:
			id, ok = mapGroup(id)
		default:
			continue
		}
		if !ok {
			return syscall.EINVAL
		}
		binary.LittleEndian.PutUint32(e[4:], id)
	}
	return 0
}
