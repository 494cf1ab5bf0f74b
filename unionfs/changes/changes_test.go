package changes

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// Hand-made OCI-form layers: ".wh.NAME" whiteouts and ".wh..wh..opq"
// opaque dirs, in the upper and in a lower.
func TestDiffOCILayers(t *testing.T) {
	d := dirs(t, "l1", "l2", "u")
	build(t, d["l2"], "a", "a", "b/x", "x", "b/y", "y", "c/z", "z", "c/sub/s", "s", "e/f", "f",
		"keep/k", "k", "xfile", "was a file", "dirfile/inner", "i", "link->a", "")
	build(t, d["l1"], ".wh.a", "", "b/.wh.x", "", "newl1", "1")
	build(t, d["u"],
		".wh.keep", "", // deletes a lower dir
		".wh.nothing", "", // hides nothing: no change
		".wh.a", "", // already deleted below: no change
		"b/.wh.y", "", // C /b, D /b/y
		"c/.wh..wh..opq", "", "c/new", "n", "c/sub/t", "t", // opaque: C, D for what it hides
		"e/f", "F", // a changed file in a merged dir
		"newdir/sub/f", "f", // all new
		"newl1", "changed",
		"xfile/inner", "i", // a dir over a lower file
		"dirfile", "now a file", // a file over a lower dir: its content goes unlisted
		"link->b", "")
	got := diffLines(t, layout.Layers{Upper: d["u"], Lowers: []string{d["l1"], d["l2"]}})
	assert.Equal(t, lines(
		"C /b", "D /b/y",
		"C /c", "A /c/new", "C /c/sub", "D /c/sub/s", "A /c/sub/t", "D /c/z",
		"C /dirfile",
		"C /e", "C /e/f",
		"D /keep",
		"C /link",
		"A /newdir", "A /newdir/sub", "A /newdir/sub/f",
		"C /newl1",
		"C /xfile", "A /xfile/inner",
	), got)
}

// An upper over no lowers, and an empty upper: everything is new, or
// nothing changed.
func TestDiffEdges(t *testing.T) {
	d := dirs(t, "l", "u", "empty")
	build(t, d["l"], "f", "f", "d/g", "g")
	build(t, d["u"], "d/h", "h", ".wh.f", "")
	assert.Equal(t, lines("A /d", "A /d/h"), diffLines(t, layout.Layers{Upper: d["u"]}))
	assert.Equal(t, "", diffLines(t, layout.Layers{Upper: d["empty"], Lowers: []string{d["l"]}}))
	list, err := Diff(layout.Layers{Upper: d["empty"], Lowers: []string{d["l"]}})
	assert.NoError(t, err)
	assert.Empty(t, list)
}

func TestCheck(t *testing.T) {
	d := dirs(t, "l", "u")
	build(t, d["u"], "file", "")
	link := filepath.Join(filepath.Dir(d["u"]), "u-link")
	must(t, os.Symlink(d["u"], link))
	for _, tc := range []struct {
		l    layout.Layers
		want string
	}{
		{layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}}, ""},
		{layout.Layers{Upper: "/nonexistent/u", Lowers: []string{d["l"]}}, "upper dir /nonexistent/u: no such file or directory"},
		{layout.Layers{Upper: d["u"], Lowers: []string{"/nonexistent/l"}}, "lower dir /nonexistent/l: no such file or directory"},
		{layout.Layers{Upper: filepath.Join(d["u"], "file"), Lowers: []string{d["l"]}}, "not a directory"},
		{layout.Layers{Upper: d["u"], Lowers: []string{d["l"], link}}, "is both the upper dir and a lower dir"},
		{layout.Layers{Upper: d["u"], Lowers: []string{""}}, "empty lower dir name"},
		{layout.Layers{Lowers: []string{d["l"]}}, "empty upper dir name"},
	} {
		err := Check(tc.l)
		if tc.want == "" {
			assert.NoError(t, err)
		} else if assert.Error(t, err, "%+v", tc.l) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}

// Changes made through kernel overlay with redirect_dir=on: char 0/0
// whiteouts, opaque xattrs and a lower directory moved with a redirect.
func TestDiffKernel(t *testing.T) {
	needRoot(t)
	d := dirs(t, "l1", "l2", "u", "w", "m")
	build(t, d["l2"], "a/b/c/f", "deep", "a/g", "g", "keep", "k", "gone/z", "z", "opq/o", "o",
		"opq/sub/s", "s", "x/y", "y", "same/s", "s", "tmp/", "")
	build(t, d["l1"], "a/h", "h", "top", "t")
	unmount := mountOverlay(t, d["m"], "lowerdir="+d["l1"]+":"+d["l2"]+",upperdir="+d["u"]+",workdir="+d["w"]+",redirect_dir=on")
	m := func(p string) string { return filepath.Join(d["m"], p) }
	must(t, os.Rename(m("a/b"), m("x/bb"))) // a moved lower dir: redirect
	must(t, os.WriteFile(m("x/bb/c/new"), []byte("n"), 0o644))
	must(t, os.Remove(m("a/g")))
	must(t, os.RemoveAll(m("gone")))
	must(t, os.RemoveAll(m("opq")))
	must(t, os.MkdirAll(m("opq/sub"), 0o755)) // opaque, and sub under it
	must(t, os.WriteFile(m("opq/o"), []byte("o2"), 0o644))
	must(t, os.WriteFile(m("keep"), []byte("changed"), 0o644))
	must(t, os.Symlink("keep", m("link")))
	must(t, os.WriteFile(m("tmp/scratch"), nil, 0o644)) // made and removed: a copied-up dir only
	must(t, os.Remove(m("tmp/scratch")))
	must(t, os.Chmod(m("top"), 0o600))
	unmount()

	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(d["u"], "gone"), &st))
	assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT, "the kernel leaves a char 0/0 whiteout")
	got := diffLines(t, layout.Layers{Upper: d["u"], Lowers: []string{d["l1"], d["l2"]}})
	assert.Equal(t, lines(
		"C /a", "D /a/b", "D /a/g",
		"D /gone",
		"C /keep",
		"A /link",
		"C /opq", "C /opq/o", "C /opq/sub", "D /opq/sub/s",
		"C /tmp",
		"C /top",
		"C /x", "A /x/bb", "A /x/bb/c", "A /x/bb/c/f", "A /x/bb/c/new",
	), got)
}

// The kernel 6.7 form: a zero-size file with an overlay.whiteout xattr in
// a directory marked opaque=x (which is not opaque), and the opaque forms
// of unprivileged unions.
func TestDiffXattrForms(t *testing.T) {
	needRoot(t)
	d := dirs(t, "l", "u")
	build(t, d["l"], "d/x", "x", "d/y", "y", "p/a", "a", "q/b", "b", "r/c", "c")
	build(t, d["u"], "d/x", "", "d/y", "still here", "p/", "", "q/", "", "r/", "")
	must(t, unix.Setxattr(filepath.Join(d["u"], "d"), "trusted.overlay.opaque", []byte("x"), 0))
	must(t, unix.Setxattr(filepath.Join(d["u"], "d/x"), "trusted.overlay.whiteout", nil, 0))
	must(t, unix.Setxattr(filepath.Join(d["u"], "p"), "user.overlay.opaque", []byte("y"), 0))
	must(t, unix.Setxattr(filepath.Join(d["u"], "q"), "user.fuseoverlayfs.opaque", []byte("y"), 0))
	must(t, unix.Mknod(filepath.Join(d["u"], "r/c"), unix.S_IFCHR, 0))
	got := diffLines(t, layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}})
	assert.Equal(t, lines("C /d", "D /d/x", "C /d/y", "C /p", "D /p/a", "C /q", "D /q/b", "C /r", "D /r/c"), got)
}
