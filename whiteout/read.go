package whiteout

import (
	"bytes"

	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// Opacity describes a directory's opaque markers.
type Opacity struct {
	// Opaque: the directory hides the same directory in layers below.
	Opaque bool
	// XattrWhiteouts: the directory may hold kernel 6.7+ xattr whiteouts
	// (zero-size files marked overlay.whiteout); set by opaque value "x".
	XattrWhiteouts bool
}

// DirMarkers are what a directory's xattrs and marker files say about it.
type DirMarkers struct {
	Opacity
	// Redirect is where the layers below keep this directory's lower
	// part (kernel redirect_dir): "/abs/path" from the layer root, or a
	// name in the same parent. Empty when it has none or an invalid one.
	Redirect string
}

// ReadDirMarkers reads the opaque state, in every form (the opaque xattr
// of all three namespaces and the OCI ".wh..wh..opq" file), and the
// redirect of the directory open at dirfd. One listxattr tells which
// values to read, so a plain directory costs two syscalls.
func ReadDirMarkers(dirfd int) DirMarkers {
	var m DirMarkers
	self := at.Loc{Dir: dirfd}
	names, _ := at.ListXattrs(self)
	has := func(name string) bool {
		for _, n := range names {
			if n == name {
				return true
			}
		}
		return false
	}
	for _, ns := range Kernel {
		if has(ns.Name(Opaque)) {
			switch v, _ := at.GetXattr(self, ns.Name(Opaque)); string(v) {
			case "y":
				m.Opaque = true
			case "x":
				m.XattrWhiteouts = true
			}
		}
		if has(ns.Name(Redirect)) && m.Redirect == "" {
			if v, err := at.GetXattr(self, ns.Name(Redirect)); err == nil && ValidRedirect(string(v)) {
				m.Redirect = string(v)
			}
		}
	}
	if has(FuseOverlayfs.Name(Opaque)) {
		if v, _ := at.GetXattr(self, FuseOverlayfs.Name(Opaque)); bytes.Equal(v, []byte("y")) {
			m.Opaque = true
		}
	}
	if !m.Opaque && at.Exists(at.Loc{Dir: dirfd, Name: OpaqueMarker}) {
		m.Opaque = true
	}
	return m
}

// ReadOpacity reads the opaque state of the directory open at dirfd.
func ReadOpacity(dirfd int) Opacity { return ReadDirMarkers(dirfd).Opacity }

// IsCharWhiteout reports whether st describes the kernel whiteout form: a
// character device with device number 0/0.
func IsCharWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// IsWhiteout reports whether the entry at l, described by x, is a whiteout
// in the kernel's forms: a 0/0 character device, or, in a directory whose
// opacity allows them, a zero-size file with an overlay.whiteout xattr.
func IsWhiteout(l at.Loc, dir Opacity, x *unix.Statx_t) bool {
	switch x.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return x.Rdev_major == 0 && x.Rdev_minor == 0
	case unix.S_IFREG:
		if dir.XattrWhiteouts && x.Size == 0 {
			for _, ns := range Kernel {
				if at.HasXattr(l, ns.Name(XWhiteout)) {
					return true
				}
			}
		}
	}
	return false
}

// HasFileWhiteout reports whether dirfd holds a ".wh.NAME" whiteout for name.
func HasFileWhiteout(dirfd int, name string) bool {
	return len(Prefix)+len(name) <= 255 && at.Exists(at.Loc{Dir: dirfd, Name: Prefix + name})
}

// Form is the form a whiteout takes in a directory.
type Form int

const (
	NoWhiteout   Form = iota
	CharWhiteout      // a 0/0 character device of the name itself
	FileWhiteout      // an OCI ".wh.NAME" file beside it
)

// IsMetacopy reports whether the upper file at l holds metadata only. Only
// the trusted form exists: a userxattr kernel mount makes and follows no
// metacopy files, and neither does layerfs, nor do the layer tools.
func IsMetacopy(l at.Loc) bool { return at.HasXattr(l, Trusted.Name(Metacopy)) }

// MayBeMetacopy tells, from its stat alone, whether an upper file may be
// a metacopy file (a hole of its data's size, at most an xattr block
// beside no data), so that only such files need their xattrs read.
func MayBeMetacopy(x *unix.Statx_t) bool {
	return x.Mode&unix.S_IFMT == unix.S_IFREG && x.Size > 0 && (x.Blocks*512 < x.Size || x.Blocks*512 <= 8192)
}

// FormOf tells which whiteout form, if any, holds name in dirfd.
func FormOf(dirfd int, name string) Form {
	var x unix.Statx_t
	if at.Statx(at.Loc{Dir: dirfd, Name: name}, &x) == nil && x.Mode&unix.S_IFMT == unix.S_IFCHR && x.Rdev_major == 0 && x.Rdev_minor == 0 {
		return CharWhiteout
	}
	if HasFileWhiteout(dirfd, name) {
		return FileWhiteout
	}
	return NoWhiteout
}
