package unionfs

import (
	"time"

	// Aliased: the package's name is taken by the type layout below.
	lay "github.com/layerfs/layerfs/unionfs/layout"
)

// Options describe one union mount.
type Options struct {
	// Lowers are the read-only layers, top first.
	Lowers []string
	// Upper and Work are both set or both empty. Without them the union
	// is read-only.
	Upper, Work string
	// Mountpoint is where the merged view appears.
	Mountpoint string

	// NoSync skips the fsync of copied-up files (fsync=0).
	NoSync bool
	// Volatile is kernel overlay's volatile: no syncs at all, and a
	// work/incompat/volatile marker that only a clean unmount removes, so
	// an upper that may have lost writes in a crash is not reused
	// unknowingly.
	Volatile bool
	// ReadOnly refuses every write even with an upper layer.
	ReadOnly bool
	// AllowOther lets every user enter the mount (FUSE allow_other),
	// permission checks deciding as on any filesystem. It is the default
	// as root (also mapped root in a user namespace), as with kernel
	// overlay and fuse-overlayfs, and for a plain user where
	// /etc/fuse.conf has user_allow_other (OthersMayEnter); set, it is
	// asked for even where fusermount3 will refuse it.
	AllowOther bool
	// Private lets only the mounting user enter (no allow_other).
	Private bool
	// NoACL turns POSIX ACLs off, as kernel overlay's noacl: permission
	// checks use the mode bits only, and a new entry's mode is masked by
	// the umask even under a default ACL.
	NoACL bool
	// UserXattr writes markers as user.overlay.* xattrs, the format of a
	// kernel overlay mounted with userxattr, even where trusted.* works.
	UserXattr bool
	// Timeout is how long the kernel may cache entries and attributes
	// (default one hour). Shorten it when lower layers change under a
	// live mount.
	Timeout time.Duration
	// Passthrough opens files with handles the kernel does I/O on
	// directly (FUSE passthrough, root only), at the cost of a round
	// trip per open; without it layerfs runs without open handles.
	Passthrough bool
	// MountFlags are generic mount flags to apply: nosuid, nodev,
	// noexec (and their opposites).
	MountFlags []string
	// UIDMap and GIDMap translate ownership: ids stored in the layers are
	// shown through the mount as mapped (uidmapping=/gidmapping=).
	UIDMap, GIDMap []IDMap
	// SquashUID and SquashGID, when set, make every entry appear owned by
	// that id (squash_to_root, squash_to_uid=, squash_to_gid=).
	SquashUID, SquashGID *uint32
	// Debug logs every FUSE request to stderr.
	Debug bool
	// NoRedirectDir refuses to rename a directory that has a lower part
	// (EXDEV, mv then copies), as kernel overlay with redirect_dir=off;
	// redirects already in the layers are still followed.
	NoRedirectDir bool
	// NoFollowRedirect also ignores the redirects in the layers (kernel
	// redirect_dir=nofollow): a moved directory shows its upper part only.
	NoFollowRedirect bool
	// NoIndex lets a copy-up of one name of a lower hard link make a file
	// of its own, as kernel overlay with index=off.
	NoIndex bool
	// NoMetacopy copies a file's data up with its metadata also for a
	// chmod, chown, utimes or xattr change, and refuses to look up a
	// metadata-only file in the layers (EPERM), as kernel metacopy=off.
	NoMetacopy bool
}

// IsConfigError reports whether err is a bad-input error (a
// layout.ConfigError): nothing was mounted and nothing was changed.
func IsConfigError(err error) bool { return lay.IsConfigError(err) }

func configErr(format string, args ...any) error {
	return lay.ConfigErrorf(format, args...)
}

// layout is the validated, resolved form of Options.
type layout struct {
	lowers     []string // absolute, symlinks resolved
	upper      string
	work       string
	mountpoint string
}

// validate checks the options without changing anything on disk.
func (o *Options) validate() (*layout, error) {
	l, mp, err := lay.ValidateMount(lay.Layers{Lowers: o.Lowers, Upper: o.Upper, Work: o.Work}, o.Mountpoint)
	if err != nil {
		return nil, err
	}
	if o.ReadOnly && l.Upper != "" {
		// A read-only mount leaves the upper as it is: served as the top
		// lower layer, it needs no work dir, so it may sit beside the
		// writable mount that holds the work dir (a container engine
		// mounts a running container's layers again to read its
		// /etc/passwd, as containerd does with kernel overlay).
		l.Lowers, l.Upper, l.Work = append([]string{l.Upper}, l.Lowers...), "", ""
	}
	return &layout{lowers: l.Lowers, upper: l.Upper, work: l.Work, mountpoint: mp}, nil
}
