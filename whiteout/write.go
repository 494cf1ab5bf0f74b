package whiteout

import (
	"errors"

	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// Make writes a whiteout for name in dirfd: the kernel's char 0/0 device
// first; where mknod is refused, an OCI ".wh.NAME" file. The name must not
// exist.
func Make(dirfd int, name string) error {
	err := unix.Mknodat(dirfd, name, unix.S_IFCHR, 0)
	if err == nil || !mknodRefused(err) {
		return err
	}
	return MakeFile(dirfd, name)
}

// CharWorks reports whether the filesystem of dirfd takes the kernel's
// char 0/0 whiteout, so that Make needs no ".wh." prefix beside a name.
func CharWorks(dirfd int) bool {
	tmp := at.Loc{Dir: dirfd, Name: at.TempName()}
	if unix.Mknodat(tmp.Dir, tmp.Name, unix.S_IFCHR, 0) != nil {
		return false
	}
	unix.Unlinkat(tmp.Dir, tmp.Name, 0)
	return true
}

// MakeFile writes the OCI form ".wh.NAME" only.
func MakeFile(dirfd int, name string) error {
	fd, err := at.Create(at.Loc{Dir: dirfd, Name: Prefix + name}, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func mknodRefused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// RenameWhiteout moves from to to (which must not exist) and leaves a
// whiteout at from: atomically where the kernel offers RENAME_WHITEOUT,
// else a rename then Make, moved back if Make fails.
func RenameWhiteout(from, to at.Loc) error {
	err := unix.Renameat2(from.Dir, from.Name, to.Dir, to.Name, unix.RENAME_WHITEOUT)
	if err == nil {
		return nil
	}
	if err := unix.Renameat(from.Dir, from.Name, to.Dir, to.Name); err != nil {
		return err
	}
	if err := Make(from.Dir, from.Name); err != nil {
		unix.Renameat(to.Dir, to.Name, from.Dir, from.Name)
		return err
	}
	return nil
}

// MakeOpaque marks the directory at dirfd opaque: with the opaque xattr of
// ns where the filesystem allows it, else with the OCI marker file.
func MakeOpaque(dirfd int, ns Namespace) error {
	if at.SetXattr(at.Loc{Dir: dirfd}, ns.Name(Opaque), []byte("y"), 0) == nil {
		return nil
	}
	fd, err := at.Open(at.Loc{Dir: dirfd, Name: OpaqueMarker}, unix.O_CREAT|unix.O_WRONLY)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// ProbeNamespace picks the namespace a union on the directory fd can
// write: Trusted when the process may set trusted xattrs there (kernel
// overlay's default format), else User (kernel userxattr format).
func ProbeNamespace(dirfd int) Namespace {
	probe := Trusted.Name("layerfs-probe")
	self := at.Loc{Dir: dirfd}
	if at.SetXattr(self, probe, []byte("1"), 0) == nil {
		at.RemoveXattr(self, probe)
		return Trusted
	}
	return User
}
