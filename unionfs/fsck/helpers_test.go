package fsck

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// needRoot: whiteout devices and trusted.* xattrs need root. CI must
// provide it; elsewhere the test skips.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root (whiteout devices, trusted.* xattrs), and CI must provide it")
	}
	t.Skip("needs root")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fixture is a union's directories under one temp dir.
type fixture struct {
	upper, work string
	lowers      []string
}

func newFixture(t *testing.T, nLowers int) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	for i := 1; i <= nLowers; i++ {
		f.lowers = append(f.lowers, filepath.Join(root, fmt.Sprintf("lower%d", i)))
	}
	for _, d := range append([]string{f.upper, f.work}, f.lowers...) {
		must(t, os.Mkdir(d, 0o755))
	}
	return f
}

func (f *fixture) layers() layout.Layers {
	return layout.Layers{Lowers: f.lowers, Upper: f.upper, Work: f.work}
}

func (f *fixture) all() []string { return append([]string{f.upper}, f.lowers...) }

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	must(t, os.MkdirAll(p, 0o755))
}

// charWhiteout makes the kernel whiteout form at p.
func charWhiteout(t *testing.T, p string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, unix.Mknod(p, unix.S_IFCHR, 0))
}

// fileWhiteout makes the OCI form ".wh.NAME" for p.
func fileWhiteout(t *testing.T, p string) {
	t.Helper()
	writeFile(t, filepath.Join(filepath.Dir(p), whiteout.Prefix+filepath.Base(p)), "")
}

func setXattr(t *testing.T, p, name, value string) {
	t.Helper()
	must(t, unix.Lsetxattr(p, name, []byte(value), 0))
}

// originOf returns a well-formed origin record naming p's inode.
func originOf(t *testing.T, p string) string {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
	must(t, err)
	b := make([]byte, 21+len(h.Bytes()))
	b[1], b[2], b[4] = 0xfb, byte(len(b)), byte(h.Type())
	copy(b[21:], h.Bytes())
	return string(b)
}

// describe says everything a merged view shows of the entry at host
// path p: type and mode, owner, size, mtime, content or target, and the
// user-visible xattrs.
func describe(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	s := fmt.Sprintf("mode=%o uid=%d gid=%d mtime=%d.%09d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(p)
		must(t, err)
		s += fmt.Sprintf(" size=%d sha=%x nlink=%d", st.Size, sha256.Sum256(b), st.Nlink)
	case unix.S_IFLNK:
		l, err := os.Readlink(p)
		must(t, err)
		s += " -> " + l
	}
	names, err := at.ListXattrs(at.Cwd(p))
	must(t, err)
	sort.Strings(names)
	for _, n := range names {
		if whiteout.IsPrivateXattr(n) {
			continue
		}
		v, err := at.GetXattr(at.Cwd(p), n)
		must(t, err)
		s += fmt.Sprintf(" %s=%q", n, v)
	}
	return s
}

// mergedView walks the stack offline and describes every entry it shows
// (names come from every layer of a directory, then each is looked up,
// so whiteouts and opaque directories decide as in a mount).
func mergedView(t *testing.T, layers []string) string {
	t.Helper()
	s := &stack.Stack{Layers: layers}
	root, err := s.Root()
	must(t, err)
	var lines []string
	var walk func(e *stack.Entry, rel string)
	walk = func(e *stack.Entry, rel string) {
		names := map[string]bool{}
		for _, d := range e.Dirs {
			ents, err := os.ReadDir(s.Real(d))
			must(t, err)
			for _, de := range ents {
				if !whiteout.IsMarkerName(de.Name()) {
					names[de.Name()] = true
				}
			}
		}
		for _, n := range sortedKeys(names) {
			c, err := s.Child(e, n)
			if errNotExist(err) {
				continue
			}
			must(t, err)
			p := path.Join(rel, n)
			lines = append(lines, p+" "+describe(t, s.Real(c.Top)))
			if c.IsDir() {
				walk(c, p)
			}
		}
	}
	lines = append(lines, "/ "+describe(t, s.Real(root.Top)))
	walk(root, "")
	return strings.Join(lines, "\n")
}

// snapshot describes every entry under dir, metadata (ctime included)
// and content, to prove that nothing changed.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	must(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s ino=%d ctime=%d.%09d rdev=%d %s", rel, st.Ino, st.Ctim.Sec, st.Ctim.Nsec, st.Rdev, describe(t, p))
		names, _ := at.ListXattrs(at.Cwd(p))
		sort.Strings(names)
		for _, n := range names {
			if whiteout.IsPrivateXattr(n) {
				v, _ := at.GetXattr(at.Cwd(p), n)
				fmt.Fprintf(&b, " %s=%q", n, v)
			}
		}
		b.WriteString("\n")
		return nil
	}))
	return b.String()
}

// snapshotLowers snapshots every lower layer.
func snapshotLowers(t *testing.T, f *fixture) []string {
	var out []string
	for _, l := range f.lowers {
		out = append(out, snapshot(t, l))
	}
	return out
}

// kinds lists the findings of r as "kind rel-path" against base dirs.
func kinds(r *Report, f *fixture) []string {
	var out []string
	for _, x := range r.Findings {
		p := x.Path
		for _, base := range append([]string{f.upper, f.work}, f.lowers...) {
			if rel, err := filepath.Rel(base, x.Path); err == nil && !strings.HasPrefix(rel, "..") {
				p = filepath.Base(base) + "/" + rel
				break
			}
		}
		out = append(out, string(x.Kind)+" "+p)
	}
	sort.Strings(out)
	return out
}
