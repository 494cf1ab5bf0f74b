// Package whiteout knows the on-disk markers of a union: whiteouts (a name
// deleted from the layers below) and opaque directories (a directory that
// hides the same directory in the layers below), in every form that kernel
// overlayfs, fuse-overlayfs and OCI image layers use. It knows nothing of
// FUSE or of the layer stack; every call works on a directory fd and a name.
package whiteout

import (
	"bytes"
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// Prefix marks an OCI/AUFS whiteout file: ".wh.NAME" hides NAME.
	Prefix = ".wh."
	// OpaqueMarker inside a directory makes it opaque (OCI form).
	OpaqueMarker = ".wh..wh..opq"
)

// Xattr namespaces for overlay metadata. The kernel reads "trusted.overlay."
// on a normal mount and "user.overlay." on a userxattr mount; fuse-overlayfs
// also wrote "user.fuseoverlayfs.".
const (
	TrustedPrefix       = "trusted.overlay."
	UserPrefix          = "user.overlay."
	FuseOverlayfsPrefix = "user.fuseoverlayfs."
)

// Namespace is the xattr prefix a union writes its metadata under.
type Namespace string

// Name returns the full xattr name for key ("opaque", "origin", ...).
func (ns Namespace) Name(key string) string { return string(ns) + key }

// IsPrivateXattr reports whether an xattr name belongs to the union's own
// metadata and must never be visible or settable through the mount.
func IsPrivateXattr(name string) bool {
	return strings.HasPrefix(name, TrustedPrefix) ||
		strings.HasPrefix(name, UserPrefix) ||
		strings.HasPrefix(name, FuseOverlayfsPrefix)
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

// IsCharWhiteout reports whether st describes the kernel whiteout form: a
// character device with device number 0/0.
func IsCharWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// procPath names an entry relative to a directory fd through /proc, so that
// xattr calls work on O_PATH descriptors without following a final symlink.
func procPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + itoa(dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	if i == 0 {
		return "0"
	}
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

// getxattr reads an xattr of dirfd/name (name "" is dirfd itself) without
// following a symlink at name.
func getxattr(dirfd int, name, attr string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		var sz int
		var err error
		if name == "" {
			sz, err = unix.Getxattr(procPath(dirfd, ""), attr, buf)
		} else {
			sz, err = unix.Lgetxattr(procPath(dirfd, name), attr, buf)
		}
		if err == unix.ERANGE {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:sz], nil
	}
}

// xattrIs reports whether dirfd/name has attr set to one of want.
func xattrIs(dirfd int, name, attr string, want ...string) bool {
	v, err := getxattr(dirfd, name, attr)
	if err != nil {
		return false
	}
	for _, w := range want {
		if bytes.Equal(v, []byte(w)) {
			return true
		}
	}
	return false
}

// Opacity describes a directory's opaque markers.
type Opacity struct {
	// Opaque: the directory hides the same directory in layers below.
	Opaque bool
	// XattrWhiteouts: the directory may hold kernel 6.7+ xattr whiteouts
	// (zero-size files marked overlay.whiteout); set by opaque value "x".
	XattrWhiteouts bool
}

// ReadOpacity reads the opaque state of the directory open at dirfd, in
// every form: the opaque xattrs of all three namespaces and the OCI
// ".wh..wh..opq" file.
func ReadOpacity(dirfd int) Opacity { return ReadDirMarkers(dirfd).Opacity }

// DirMarkers are what a directory's xattrs and marker files say about it.
type DirMarkers struct {
	Opacity
	// Redirect is where the layers below keep this directory's lower
	// part (kernel redirect_dir): "/abs/path" from the layer root, or a
	// name in the same parent. Empty when it has none or an invalid one.
	Redirect string
}

// ReadDirMarkers reads the opaque state and the redirect of the directory
// open at dirfd. One listxattr tells which values to read, so a plain
// directory costs two syscalls.
func ReadDirMarkers(dirfd int) DirMarkers {
	var m DirMarkers
	names := listxattr(dirfd)
	for _, ns := range []string{TrustedPrefix, UserPrefix} {
		if names[ns+"opaque"] {
			switch v, _ := getxattr(dirfd, "", ns+"opaque"); string(v) {
			case "y":
				m.Opaque = true
			case "x":
				m.XattrWhiteouts = true
			}
		}
		if names[ns+"redirect"] && m.Redirect == "" {
			if v, err := getxattr(dirfd, "", ns+"redirect"); err == nil && ValidRedirect(string(v)) {
				m.Redirect = string(v)
			}
		}
	}
	if names[FuseOverlayfsPrefix+"opaque"] && xattrIs(dirfd, "", FuseOverlayfsPrefix+"opaque", "y") {
		m.Opaque = true
	}
	if !m.Opaque {
		var st unix.Stat_t
		if unix.Fstatat(dirfd, OpaqueMarker, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			m.Opaque = true
		}
	}
	return m
}

// ValidRedirect reports whether r is a redirect the kernel would follow:
// a single name, or an absolute path of clean, non-empty components.
func ValidRedirect(r string) bool {
	if r == "" || r == "/" {
		return false
	}
	rel := !strings.HasPrefix(r, "/")
	if rel && strings.Contains(r, "/") {
		return false
	}
	for _, c := range strings.Split(strings.TrimPrefix(r, "/"), "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// listxattr returns the set of xattr names of the directory at dirfd.
func listxattr(dirfd int) map[string]bool {
	buf := make([]byte, 1024)
	p := procPath(dirfd, "")
	for {
		sz, err := unix.Listxattr(p, buf)
		if err == unix.ERANGE {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if err != nil || sz == 0 {
			return nil
		}
		names := map[string]bool{}
		for _, n := range bytes.Split(buf[:sz], []byte{0}) {
			if len(n) > 0 {
				names[string(n)] = true
			}
		}
		return names
	}
}

// IsXattrWhiteout reports whether dirfd/name, described by st, is a kernel
// 6.7+ xattr whiteout. Only meaningful in a directory whose Opacity has
// XattrWhiteouts set.
func IsXattrWhiteout(dirfd int, name string, st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	for _, ns := range []string{TrustedPrefix, UserPrefix} {
		if _, err := getxattr(dirfd, name, ns+"whiteout"); err == nil {
			return true
		}
	}
	return false
}

// HasFileWhiteout reports whether dirfd holds a ".wh.NAME" whiteout for name.
func HasFileWhiteout(dirfd int, name string) bool {
	if len(Prefix)+len(name) > 255 {
		return false
	}
	var st unix.Stat_t
	return unix.Fstatat(dirfd, Prefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

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

// MakeFile writes the OCI form ".wh.NAME" only.
func MakeFile(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, Prefix+name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func mknodRefused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// MakeOpaque marks the directory at dirfd opaque: with the "opaque" xattr of
// ns where the filesystem allows it, else with the OCI marker file.
func MakeOpaque(dirfd int, ns Namespace) error {
	err := unix.Setxattr(procPath(dirfd, ""), ns.Name("opaque"), []byte("y"), 0)
	if err == nil {
		return nil
	}
	fd, err := unix.Openat(dirfd, OpaqueMarker, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// ProbeNamespace picks the xattr namespace a union on the directory fd can
// write: "trusted.overlay." when the process may set trusted xattrs there
// (kernel overlay's default format), else "user.overlay." (kernel
// userxattr format).
func ProbeNamespace(dirfd int) Namespace {
	const probe = TrustedPrefix + "layerfs-probe"
	p := procPath(dirfd, "")
	if err := unix.Setxattr(p, probe, []byte("1"), 0); err == nil {
		unix.Removexattr(p, probe)
		return TrustedPrefix
	}
	return UserPrefix
}
