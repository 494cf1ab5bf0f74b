package unionfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
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
	// AllowOther lets other users see the mount (FUSE allow_other).
	AllowOther bool
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

// ConfigError is a problem with the options themselves; nothing was mounted
// and nothing was changed.
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

func configErr(format string, args ...any) error {
	return &ConfigError{fmt.Sprintf(format, args...)}
}

// IsConfigError reports whether err is a bad-input error.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// layout is the validated, resolved form of Options.
type layout struct {
	lowers     []string // absolute, symlinks resolved
	upper      string
	work       string
	mountpoint string
}

// resolveDir makes p absolute with symlinks resolved and checks that it is
// a directory.
func resolveDir(what, p string) (string, error) {
	if p == "" {
		return "", configErr("%s: empty path", what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", configErr("%s %q: %v", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", configErr("%s %q does not exist", what, p)
		}
		return "", configErr("%s %q: %v", what, p, unwrapPathErr(err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", configErr("%s %q: %v", what, p, unwrapPathErr(err))
	}
	if !fi.IsDir() {
		return "", configErr("%s %q is not a directory", what, p)
	}
	return real, nil
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// inside reports whether p is dir or below it.
func inside(p, dir string) bool {
	if p == dir {
		return true
	}
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// validate checks the options without changing anything on disk.
func (o *Options) validate() (*layout, error) {
	if len(o.Lowers) == 0 {
		return nil, configErr("no lower directory given (lowerdir=DIR[:DIR...] or --lower DIR)")
	}
	if (o.Upper == "") != (o.Work == "") {
		if o.Upper == "" {
			return nil, configErr("workdir given without upperdir")
		}
		return nil, configErr("upperdir given without workdir")
	}
	l := &layout{}
	for _, p := range o.Lowers {
		r, err := resolveDir("lowerdir", p)
		if err != nil {
			return nil, err
		}
		l.lowers = append(l.lowers, r)
	}
	mp, err := resolveDir("mountpoint", o.Mountpoint)
	if err != nil {
		return nil, err
	}
	l.mountpoint = mp
	for i, low := range l.lowers {
		if inside(mp, low) && mp != low {
			return nil, configErr("mountpoint %q is inside lowerdir %q", o.Mountpoint, o.Lowers[i])
		}
	}
	if o.Upper == "" {
		return l, nil
	}
	if l.upper, err = resolveDir("upperdir", o.Upper); err != nil {
		return nil, err
	}
	if l.work, err = resolveDir("workdir", o.Work); err != nil {
		return nil, err
	}
	if l.upper == l.work {
		return nil, configErr("upperdir and workdir are the same directory")
	}
	if inside(l.work, l.upper) {
		return nil, configErr("workdir %q is inside upperdir %q", o.Work, o.Upper)
	}
	if inside(l.upper, l.work) {
		return nil, configErr("upperdir %q is inside workdir %q", o.Upper, o.Work)
	}
	for i, low := range l.lowers {
		for _, c := range []struct{ what, p, given string }{{"upperdir", l.upper, o.Upper}, {"workdir", l.work, o.Work}} {
			if inside(c.p, low) {
				return nil, configErr("%s %q is inside lowerdir %q", c.what, c.given, o.Lowers[i])
			}
			if inside(low, c.p) {
				return nil, configErr("lowerdir %q is inside %s %q", o.Lowers[i], c.what, c.given)
			}
		}
	}
	if inside(l.upper, mp) {
		return nil, configErr("upperdir %q is inside the mountpoint %q", o.Upper, o.Mountpoint)
	}
	if inside(l.work, mp) {
		return nil, configErr("workdir %q is inside the mountpoint %q", o.Work, o.Mountpoint)
	}
	if inside(mp, l.upper) || inside(mp, l.work) {
		return nil, configErr("mountpoint %q is inside upperdir or workdir", o.Mountpoint)
	}
	var su, sw unix.Stat_t
	if err := unix.Stat(l.upper, &su); err != nil {
		return nil, configErr("upperdir %q: %v", o.Upper, err)
	}
	if err := unix.Stat(l.work, &sw); err != nil {
		return nil, configErr("workdir %q: %v", o.Work, err)
	}
	if su.Dev != sw.Dev {
		return nil, configErr("workdir %q is not on the same filesystem as upperdir %q", o.Work, o.Upper)
	}
	return l, nil
}

// ValidateLayers checks layer dirs as a mount would, for tools that work
// on them offline: each exists and is a directory, and no upper or work
// dir is the same as, inside or around a lower dir or the other. upper
// and work may be empty.
func ValidateLayers(lowers []string, upper, work string) error {
	type dir struct{ what, real, given string }
	var ds []dir
	for _, p := range lowers {
		r, err := resolveDir("lowerdir", p)
		if err != nil {
			return err
		}
		ds = append(ds, dir{"lowerdir", r, p})
	}
	for _, c := range []struct{ what, p string }{{"upperdir", upper}, {"workdir", work}} {
		if c.p == "" {
			continue
		}
		r, err := resolveDir(c.what, c.p)
		if err != nil {
			return err
		}
		for _, d := range ds {
			switch {
			case r == d.real:
				return configErr("%s %q and %s %q are the same directory", c.what, c.p, d.what, d.given)
			case inside(r, d.real):
				return configErr("%s %q is inside %s %q", c.what, c.p, d.what, d.given)
			case inside(d.real, r):
				return configErr("%s %q is inside %s %q", d.what, d.given, c.what, c.p)
			}
		}
		ds = append(ds, dir{c.what, r, c.p})
	}
	return nil
}
