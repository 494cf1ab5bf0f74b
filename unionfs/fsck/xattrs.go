package fsck

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// checkXattrs checks the union's own xattrs on the real entry p: origin
// records on anything, opaque markers and redirects where they cannot
// mean anything. Redirects on directories need the layers below and are
// checked by checkDirXattrs. Both kernel namespaces are checked.
func (c *checker) checkXattrs(ly *layer, p string, st *unix.Stat_t) {
	priv, _, err := xattrs(at.Cwd(p))
	if err != nil {
		c.errorf("%s: reading xattrs: %v", p, err)
		return
	}
	for _, name := range sortedKeys(priv) {
		v := priv[name]
		drop := fixBy("removed the xattr (no union reads it)", removeXattr(p, name, v))
		_, key, _ := whiteout.ParseKey(name)
		switch {
		case key == whiteout.Origin:
			if why := whiteout.OriginProblem(v); why != "" {
				// The kernel logs "invalid origin" and ignores it;
				// without one the entry is a plain copy.
				c.add(ly, p, BadOrigin, fmt.Sprintf("%s: %s", name, why), fixBy("removed the xattr (the entry then has no recorded origin)", removeXattr(p, name, v)))
			}
		case key == whiteout.Opaque && !isDir(st):
			c.add(ly, p, BadOpaque, name+" on a non-directory (ignored)", drop)
		case key == whiteout.Opaque && string(v) != "y" && string(v) != "x":
			c.add(ly, p, BadOpaque, fmt.Sprintf("%s=%q is neither y nor x (ignored: the directory is not opaque)", name, v), drop)
		case key == whiteout.Redirect && !isDir(st) && !whiteout.IsMetacopy(at.Cwd(p)):
			c.add(ly, p, MisplacedRedirect, name+" on a non-directory that is no metacopy file (ignored)", drop)
		case name == whiteout.FuseOverlayfs.Name(whiteout.Opaque) && (!isDir(st) || string(v) != "y"):
			c.add(ly, p, BadOpaque, fmt.Sprintf("%s=%q on a %s (ignored)", name, v, kindOf(st)), drop)
		}
	}
}

// checkUpperOrigin reports when the upper was used with other lower dirs
// (see upperOriginMismatch), and whether the upper must be left alone.
func (c *checker) checkUpperOrigin(l layout.Layers) bool {
	name, mismatch := upperOriginMismatch(l)
	if mismatch {
		ly := &layer{name: "upper", frozen: "give the lower dirs the upper was made with"}
		c.add(ly, l.Upper, LowerMismatch, name+" of the upper root does not name the top lower dir "+l.Lowers[0]+": the upper was used with other lower dirs (kernel overlay with index=on refuses to mount it)", noFix(""))
	}
	return mismatch
}

// upperOriginMismatch compares the origin record kernel overlay keeps on
// the upper root (with index=on) with the top lower dir. A mismatch means
// the upper was used with other lower dirs, and judging its whiteouts,
// redirects and copies against these would be wrong. It returns the
// xattr that says so.
func upperOriginMismatch(l layout.Layers) (string, bool) {
	for _, ns := range whiteout.Kernel {
		v, err := at.GetXattr(at.Cwd(l.Upper), ns.Name(whiteout.Origin))
		want, ok := whiteout.OriginHandle(v)
		if err != nil || !ok {
			continue
		}
		h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, l.Lowers[0], 0)
		if err == nil && (want.Type() != h.Type() || !bytes.Equal(want.Bytes(), h.Bytes())) {
			return ns.Name(whiteout.Origin), true
		}
	}
	return "", false
}

// checkRootOpacity reports an opaque marker on a layer root: unions
// ignore it (the root always merges every layer), so it only misleads.
// The xattr forms can go; the OCI file is a visible file to kernel
// overlay, left to a person.
func (c *checker) checkRootOpacity(ly *layer, root string) {
	for _, ns := range []whiteout.Namespace{whiteout.Trusted, whiteout.User, whiteout.FuseOverlayfs} {
		name := ns.Name(whiteout.Opaque)
		if v, err := at.GetXattr(at.Cwd(root), name); err == nil && string(v) == "y" {
			c.add(ly, root, BadOpaque, name+"=y on a layer root (ignored: a root always merges)", fixBy("removed the xattr (no union reads it)", removeXattr(root, name, v)))
		}
	}
	var st unix.Stat_t
	p := filepath.Join(root, whiteout.OpaqueMarker)
	if unix.Lstat(p, &st) == nil {
		c.add(ly, p, BadOpaque, "opaque marker in a layer root (ignored: a root always merges)", noFix("kernel overlay shows it as a file: remove it by hand"))
	}
}

// checkDirXattrs checks the redirects of directory n of parent (child is
// its merged entry): malformed values, and targets that lead nowhere.
func (c *checker) checkDirXattrs(ly *layer, parent *stack.Entry, n string, child *stack.Entry) {
	p := ly.s.Real(child.Dirs[0])
	redirects := readRedirects(p)
	if len(redirects) == 0 {
		return
	}
	opaque := stack.Markers(p).Opaque
	malformed := false
	for _, r := range redirects {
		if why := whiteout.RedirectProblem(r.value); why != "" {
			malformed = true
			c.add(ly, p, BadRedirect, fmt.Sprintf("%s=%q %s", r.name, r.value, why), c.redirectFix(ly, parent, n, child, opaque, redirects))
		}
	}
	if !malformed && !opaque && len(child.Dirs) == 1 {
		c.add(ly, p, DanglingRedirect, fmt.Sprintf("%s=%q leads to no directory in the layers below", redirects[0].name, redirects[0].value), c.redirectFix(ly, parent, n, child, opaque, redirects))
	}
}

type xattrVal struct{ name, value string }

// readRedirects returns the redirect xattrs of p, trusted namespace first
// (the one the stack follows first).
func readRedirects(p string) []xattrVal {
	var out []xattrVal
	for _, ns := range whiteout.Kernel {
		if v, err := at.GetXattr(at.Cwd(p), ns.Name(whiteout.Redirect)); err == nil {
			out = append(out, xattrVal{ns.Name(whiteout.Redirect), string(v)})
		}
	}
	return out
}

// redirectFix removes the redirects of a directory only where the merged
// view provably stays the same: the directory is opaque (the redirect is
// not followed), or without it the layers below would merge the same
// directories. A redirect that leads nowhere is replaced by an opaque
// marker when the directory's own name has something below, so that
// nothing new shows through. Anything else is left to a person.
func (c *checker) redirectFix(ly *layer, parent *stack.Entry, n string, child *stack.Entry, opaque bool, rs []xattrVal) fixer {
	p := ly.s.Real(child.Dirs[0])
	remove := func() error {
		for _, r := range rs {
			if err := removeXattr(p, r.name, []byte(r.value))(); err != nil {
				return err
			}
		}
		return nil
	}
	if opaque {
		return fixBy("removed the redirect (the directory is opaque: it is not followed)", remove)
	}
	now := child.Dirs[1:]
	without, err := dirsBelow(ly.s, parent, n)
	if err != nil {
		return noFix("could not tell what the layers below show: " + err.Error())
	}
	if sameLocs(now, without) {
		return fixBy("removed the redirect (the layers below merge the same without it)", remove)
	}
	if len(now) == 0 {
		ns, _, _ := whiteout.ParseKey(rs[0].name)
		return fixBy("marked the directory opaque and removed the redirect (it showed nothing from below, and stays so)", func() error {
			// Opaque first: a crash in between leaves an opaque
			// directory with a redirect, which shows the same.
			if err := at.SetXattr(at.Cwd(p), ns.Name(whiteout.Opaque), []byte("y"), 0); err != nil {
				return err
			}
			return remove()
		})
	}
	return noFix(fmt.Sprintf("layerfs follows it to %s; removing it would change the merged view", ly.s.Real(now[0])))
}

// dirsBelow returns the directories the layers below parent's own would
// merge under name, were the layer's directory name without a redirect.
func dirsBelow(s *stack.Stack, parent *stack.Entry, name string) ([]stack.Loc, error) {
	e, err := s.Child(&stack.Entry{Dirs: parent.Dirs[1:]}, name)
	if errNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !e.IsDir() {
		return nil, nil // a directory above hides a non-directory
	}
	return e.Dirs, nil
}

// removeXattr returns a fix removing xattr name from p if it still has
// the value judged.
func removeXattr(p, name string, judged []byte) func() error {
	return func() error {
		v, err := at.GetXattr(at.Cwd(p), name)
		if errors.Is(err, unix.ENODATA) {
			return nil
		}
		if err != nil {
			return err
		}
		if !bytes.Equal(v, judged) {
			return fmt.Errorf("%s of %s changed since it was checked", name, p)
		}
		return at.RemoveXattr(at.Cwd(p), name)
	}
}

func kindOf(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFLNK:
		return "symlink"
	}
	return "special file"
}
