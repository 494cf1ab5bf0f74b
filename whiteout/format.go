// Package whiteout is the union's on-disk format, named in one place: the
// marker names and xattr keys of kernel overlayfs (and the OCI and
// fuse-overlayfs forms it reads), the origin file handle record, the
// index's link count record, and how whiteouts and opaque directories are
// read and written. Every call works on directory descriptors and names;
// it knows nothing of FUSE or of the layer stack.
package whiteout

import (
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// Prefix marks an OCI/AUFS whiteout file: ".wh.NAME" hides NAME.
	Prefix = ".wh."
	// OpaqueMarker inside a directory makes it opaque (OCI form).
	OpaqueMarker = ".wh..wh..opq"
)

// Namespace is an xattr prefix the union's metadata lives under.
type Namespace string

// The kernel reads Trusted on a normal mount and User on a userxattr
// mount; fuse-overlayfs also wrote FuseOverlayfs (opaque only).
const (
	Trusted       Namespace = "trusted.overlay."
	User          Namespace = "user.overlay."
	FuseOverlayfs Namespace = "user.fuseoverlayfs."
)

// Kernel lists the kernel's namespaces, in the order markers are read.
var Kernel = []Namespace{Trusted, User}

// Key is the name of one of the union's xattrs inside a namespace (the
// kernel's enum ovl_xattr).
type Key string

const (
	// Opaque on a directory: "y" hides the same directory in the layers
	// below; "x" says it may hold xattr whiteouts (kernel 6.7+).
	Opaque Key = "opaque"
	// Redirect on a directory (or a metacopy file): where the layers
	// below keep its lower part, "/abs/path" or a name in the same parent.
	Redirect Key = "redirect"
	// Origin on a copied-up entry: the file handle of the lower inode it
	// came from (see EncodeOrigin).
	Origin Key = "origin"
	// Impure on an upper directory: it holds entries whose inode numbers
	// come from elsewhere (copied up or moved in).
	Impure Key = "impure"
	// Nlink on an index entry: the union's link count (see Nlink).
	Nlink Key = "nlink"
	// Metacopy on an upper file: it holds metadata only, its data lives
	// below (kernel metacopy).
	Metacopy Key = "metacopy"
	// XWhiteout on a zero-size file in an "x" opaque directory: the file
	// is a whiteout (kernel 6.7+).
	XWhiteout Key = "whiteout"
)

// Allows reports whether the namespace can be set on an entry of the
// file type in mode: user.* xattrs only exist on regular files and
// directories (the kernel's userxattr mounts record no origin on others).
func (ns Namespace) Allows(mode uint32) bool {
	if ns == Trusted {
		return true
	}
	t := mode & unix.S_IFMT
	return t == unix.S_IFREG || t == unix.S_IFDIR
}

// Name returns the full xattr name of key in ns.
func (ns Namespace) Name(key Key) string { return string(ns) + string(key) }

// ParseKey splits a private xattr name of the kernel's namespaces into
// its namespace and key.
func ParseKey(name string) (Namespace, Key, bool) {
	for _, ns := range Kernel {
		if k, ok := strings.CutPrefix(name, string(ns)); ok {
			return ns, Key(k), true
		}
	}
	return "", "", false
}

// IsPrivateXattr reports whether an xattr name belongs to the union's own
// metadata and must never be visible or settable through the mount.
func IsPrivateXattr(name string) bool {
	return strings.HasPrefix(name, string(Trusted)) ||
		strings.HasPrefix(name, string(User)) ||
		strings.HasPrefix(name, string(FuseOverlayfs))
}

// IsMarkerName reports whether name is reserved for markers (".wh.*"); such
// names are never shown through the mount.
func IsMarkerName(name string) bool { return strings.HasPrefix(name, Prefix) }

// Target returns NAME for a ".wh.NAME" whiteout file name.
func Target(name string) (string, bool) {
	if !strings.HasPrefix(name, Prefix) || name == OpaqueMarker {
		return "", false
	}
	t := name[len(Prefix):]
	if t == "" || t == "." || t == ".." {
		return "", false
	}
	return t, true
}

// RedirectProblem says what is wrong with a redirect value, "" when the
// kernel would follow it: an absolute path "/a/b" of non-empty components
// other than "." and "..", or one such name in the same parent.
func RedirectProblem(r string) string {
	switch {
	case r == "":
		return "empty"
	case strings.IndexByte(r, 0) >= 0:
		return "contains a NUL byte"
	case r == "/":
		return "names the layer root"
	case r[0] == '/':
		for _, c := range strings.Split(r[1:], "/") {
			if c == "" {
				return `has an empty component ("//" or a trailing "/")`
			}
			if c == "." || c == ".." {
				return `has a "." or ".." component`
			}
		}
	case strings.Contains(r, "/"):
		return "is relative but not a single name"
	case r == "." || r == "..":
		return `is "." or ".."`
	}
	return ""
}

// ValidRedirect reports whether r is a redirect the kernel would follow.
func ValidRedirect(r string) bool { return RedirectProblem(r) == "" }
