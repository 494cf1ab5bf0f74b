// Package layout knows the directories of a union and nothing of FUSE:
// the layer stack (Layers), its validation as a mount does it, the mounts
// in /proc/self/mountinfo, whether a live union uses a stack (InUse), and
// what serves a mounted union (Describe). The mount binary, the kernel
// driver and the offline layer tools share it.
package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Layers names the directories of a union the way a mount gets them.
type Layers struct {
	// Lowers are the read-only layers, top first.
	Lowers []string
	// Upper is the writable layer and Work its work dir, on the upper's
	// filesystem. A mount takes both or neither; tools that only read
	// may leave either empty.
	Upper, Work string
}

// ConfigError is a problem with the input itself (options, layer dirs);
// nothing was mounted and nothing was changed.
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

// ConfigErrorf formats a ConfigError.
func ConfigErrorf(format string, args ...any) error {
	return &ConfigError{fmt.Sprintf(format, args...)}
}

// IsConfigError reports whether err is a bad-input error.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// resolveDir makes p absolute with symlinks resolved and checks that it is
// a directory.
func resolveDir(what, p string) (string, error) {
	if p == "" {
		return "", ConfigErrorf("%s: empty path", what)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", ConfigErrorf("%s %q: %v", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", ConfigErrorf("%s %q does not exist", what, p)
		}
		return "", ConfigErrorf("%s %q: %v", what, p, unwrapPathErr(err))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", ConfigErrorf("%s %q: %v", what, p, unwrapPathErr(err))
	}
	if !fi.IsDir() {
		return "", ConfigErrorf("%s %q is not a directory", what, p)
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

// ValidateMount checks a union's layers and mount point as a mount does,
// without changing anything on disk: at least one lower, upper and work
// both or neither, every dir a directory, no upper or work dir inside (or
// around) a lower, the other or the mount point, and work on the upper's
// filesystem. It returns the layers and the mount point absolute, with
// symlinks resolved. Its errors are ConfigErrors.
func ValidateMount(l Layers, mountpoint string) (resolved Layers, mnt string, err error) {
	if len(l.Lowers) == 0 {
		return Layers{}, "", ConfigErrorf("no lower directory given (lowerdir=DIR[:DIR...] or --lower DIR)")
	}
	if (l.Upper == "") != (l.Work == "") {
		if l.Upper == "" {
			return Layers{}, "", ConfigErrorf("workdir given without upperdir")
		}
		return Layers{}, "", ConfigErrorf("upperdir given without workdir")
	}
	var r Layers
	for _, p := range l.Lowers {
		d, err := resolveDir("lowerdir", p)
		if err != nil {
			return Layers{}, "", err
		}
		r.Lowers = append(r.Lowers, d)
	}
	mp, err := resolveDir("mountpoint", mountpoint)
	if err != nil {
		return Layers{}, "", err
	}
	for i, low := range r.Lowers {
		if inside(mp, low) && mp != low {
			return Layers{}, "", ConfigErrorf("mountpoint %q is inside lowerdir %q", mountpoint, l.Lowers[i])
		}
	}
	if l.Upper == "" {
		return r, mp, nil
	}
	if r.Upper, err = resolveDir("upperdir", l.Upper); err != nil {
		return Layers{}, "", err
	}
	if r.Work, err = resolveDir("workdir", l.Work); err != nil {
		return Layers{}, "", err
	}
	if r.Upper == r.Work {
		return Layers{}, "", ConfigErrorf("upperdir and workdir are the same directory")
	}
	if inside(r.Work, r.Upper) {
		return Layers{}, "", ConfigErrorf("workdir %q is inside upperdir %q", l.Work, l.Upper)
	}
	if inside(r.Upper, r.Work) {
		return Layers{}, "", ConfigErrorf("upperdir %q is inside workdir %q", l.Upper, l.Work)
	}
	for i, low := range r.Lowers {
		for _, c := range []struct{ what, p, given string }{{"upperdir", r.Upper, l.Upper}, {"workdir", r.Work, l.Work}} {
			if inside(c.p, low) {
				return Layers{}, "", ConfigErrorf("%s %q is inside lowerdir %q", c.what, c.given, l.Lowers[i])
			}
			if inside(low, c.p) {
				return Layers{}, "", ConfigErrorf("lowerdir %q is inside %s %q", l.Lowers[i], c.what, c.given)
			}
		}
	}
	if inside(r.Upper, mp) {
		return Layers{}, "", ConfigErrorf("upperdir %q is inside the mountpoint %q", l.Upper, mountpoint)
	}
	if inside(r.Work, mp) {
		return Layers{}, "", ConfigErrorf("workdir %q is inside the mountpoint %q", l.Work, mountpoint)
	}
	if inside(mp, r.Upper) || inside(mp, r.Work) {
		return Layers{}, "", ConfigErrorf("mountpoint %q is inside upperdir or workdir", mountpoint)
	}
	var su, sw unix.Stat_t
	if err := unix.Stat(r.Upper, &su); err != nil {
		return Layers{}, "", ConfigErrorf("upperdir %q: %v", l.Upper, err)
	}
	if err := unix.Stat(r.Work, &sw); err != nil {
		return Layers{}, "", ConfigErrorf("workdir %q: %v", l.Work, err)
	}
	if su.Dev != sw.Dev {
		return Layers{}, "", ConfigErrorf("workdir %q is not on the same filesystem as upperdir %q", l.Work, l.Upper)
	}
	return r, mp, nil
}

// ValidateLayers checks layer dirs as a mount would, for tools that work
// on them offline: each exists and is a directory, and no upper or work
// dir is the same as, inside or around a lower dir or the other. Upper
// and Work may be empty. Its errors are ConfigErrors.
func ValidateLayers(l Layers) error {
	type dir struct{ what, real, given string }
	var ds []dir
	for _, p := range l.Lowers {
		r, err := resolveDir("lowerdir", p)
		if err != nil {
			return err
		}
		ds = append(ds, dir{"lowerdir", r, p})
	}
	for _, c := range []struct{ what, p string }{{"upperdir", l.Upper}, {"workdir", l.Work}} {
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
				return ConfigErrorf("%s %q and %s %q are the same directory", c.what, c.p, d.what, d.given)
			case inside(r, d.real):
				return ConfigErrorf("%s %q is inside %s %q", c.what, c.p, d.what, d.given)
			case inside(d.real, r):
				return ConfigErrorf("%s %q is inside %s %q", d.what, d.given, c.what, c.p)
			}
		}
		ds = append(ds, dir{c.what, r, c.p})
	}
	return nil
}
