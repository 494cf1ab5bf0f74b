package changes

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

func export(t *testing.T, l layout.Layers, opt ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, Export(&buf, l, opt))
	return buf.Bytes()
}

// entry is what a test checks of a tar entry.
type entry struct {
	hdr  *tar.Header
	data string
}

func readTar(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		data, err := io.ReadAll(tr)
		must(t, err)
		out = append(out, entry{h, string(data)})
	}
}

// summary is one line per entry: name, type, mode, owner, size or link.
func summary(es []entry) string {
	var b strings.Builder
	for _, e := range es {
		h := e.hdr
		fmt.Fprintf(&b, "%s %c %o %d:%d", h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid)
		switch h.Typeflag {
		case tar.TypeReg:
			fmt.Fprintf(&b, " %q", e.data)
		case tar.TypeLink, tar.TypeSymlink:
			fmt.Fprintf(&b, " -> %s", h.Linkname)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// The tarball's form: order, names, markers, owners, modes, xattrs, hard
// links, and what it leaves out.
func TestExportFormat(t *testing.T) {
	d := dirs(t, "l", "u")
	build(t, d["l"], "gone", "g", "opq/old", "o", "d/x", "x", "d/y", "y", "-dash", "")
	build(t, d["u"],
		".wh.gone", "", ".wh.nothing", "",
		"opq/.wh..wh..opq", "", "opq/new", "n",
		"d/.wh.x", "", "d/z", "z", "d/sub/f", "f",
		"new/", "", "a", "A", "-dash", "dashed", "sym->a", "")
	u := func(p string) string { return filepath.Join(d["u"], p) }
	must(t, os.Link(u("a"), u("d/hard")))
	must(t, unix.Chmod(u("a"), 0o4755))
	must(t, unix.Chmod(u("new"), 0o1777))
	must(t, os.Lchown(u("d/z"), 1234, 5678))
	must(t, unix.Mkfifo(u("fifo"), 0o600))
	must(t, unix.Setxattr(u("a"), "user.keep", []byte("me"), 0))
	must(t, unix.Setxattr(u("a"), "user.overlay.origin", []byte("private"), 0))
	ln, err := net.Listen("unix", u("sock"))
	must(t, err)
	defer ln.Close()

	var warnings []string
	var progress []int64
	mtime := time.Unix(1700000000, 0)
	b := export(t, layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}}, ExportOptions{
		MTime:    mtime,
		Warn:     func(m string) { warnings = append(warnings, m) },
		Progress: func(n int64) { progress = append(progress, n) },
	})
	es := readTar(t, b)
	assert.Equal(t, strings.Join([]string{
		`.wh.gone 0 0 0:0 ""`,
		`-dash 0 644 0:0 "dashed"`,
		`a 0 4755 0:0 "A"`,
		`d/ 5 755 0:0`,
		`d/.wh.x 0 0 0:0 ""`,
		`d/hard 1 4755 0:0 -> a`,
		`d/sub/ 5 755 0:0`,
		`d/sub/f 0 644 0:0 "f"`,
		`d/z 0 644 1234:5678 "z"`,
		`fifo 6 600 0:0`,
		`new/ 5 1777 0:0`,
		`opq/ 5 755 0:0`,
		`opq/.wh..wh..opq 0 0 0:0 ""`,
		`opq/new 0 644 0:0 "n"`,
		`sym 2 777 0:0 -> a`,
	}, "\n")+"\n", summary(es))
	for _, e := range es {
		h := e.hdr
		assert.True(t, h.ModTime.Equal(mtime), "%s: mtime %v", h.Name, h.ModTime)
		assert.True(t, h.AccessTime.IsZero() && h.ChangeTime.IsZero(), "%s: atime/ctime", h.Name)
		assert.Empty(t, h.Uname+h.Gname, "%s: user or group name", h.Name)
		for k := range h.PAXRecords {
			assert.True(t, k == "SCHILY.xattr.user.keep" && h.Name == "a", "%s: PAX record %s", h.Name, k)
		}
	}
	assert.Equal(t, "me", es[2].hdr.PAXRecords["SCHILY.xattr.user.keep"])
	assert.Equal(t, []string{"skipping socket /sock: a layer tarball cannot hold one"}, warnings)
	assert.Equal(t, len(es), len(progress), "one progress call per entry")
	assert.Equal(t, int64(6), progress[1], "progress counts data bytes")
}

// The same layers give the same bytes, and so does a `cp -a` copy of them
// with the mtime fixed.
func TestExportReproducible(t *testing.T) {
	d := dirs(t, "l", "u")
	build(t, d["l"], "gone", "g", "opq/old", "o", "f", "f")
	build(t, d["u"], ".wh.gone", "", "opq/.wh..wh..opq", "", "opq/new", "n", "f", "F", "b/c/d", "d", "s->f", "")
	must(t, os.Link(filepath.Join(d["u"], "f"), filepath.Join(d["u"], "b/f")))
	must(t, unix.Setxattr(filepath.Join(d["u"], "f"), "user.a", []byte("1"), 0))
	sparse := filepath.Join(d["u"], "sparse")
	must(t, os.WriteFile(sparse, []byte("head"), 0o644))
	writeAt(t, sparse, 1<<20, "tail")

	l := layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}}
	first := export(t, l, ExportOptions{})
	assert.Equal(t, first, export(t, l, ExportOptions{}), "two exports differ")

	copyRoot := t.TempDir()
	if out, err := exec.Command("cp", "-a", d["l"], d["u"], copyRoot).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	c := layout.Layers{Upper: filepath.Join(copyRoot, "u"), Lowers: []string{filepath.Join(copyRoot, "l")}}
	opt := ExportOptions{MTime: time.Unix(86400, 0)}
	assert.True(t, bytes.Equal(export(t, l, opt), export(t, c, opt)), "the export of a cp -a copy differs")
}

func writeAt(t *testing.T, p string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte(s), off)
	must(t, err)
	must(t, f.Close())
}

// Files with holes are written in PAX sparse 1.0 form, and both Go's
// archive/tar and GNU tar give the holes and the content back.
func TestExportSparse(t *testing.T) {
	d := dirs(t, "u", "out")
	u := func(p string) string { return filepath.Join(d["u"], p) }
	must(t, os.WriteFile(u("holes"), bytes.Repeat([]byte("a"), 8192), 0o644))
	writeAt(t, u("holes"), 1<<20, "middle")
	must(t, os.Truncate(u("holes"), 3<<20)) // ends in a hole
	must(t, os.WriteFile(u("allhole"), nil, 0o644))
	must(t, os.Truncate(u("allhole"), 1<<20))
	must(t, os.WriteFile(u("dense"), bytes.Repeat([]byte("d"), 10000), 0o644))
	must(t, unix.Setxattr(u("holes"), "user.sparse", []byte("kept"), 0))
	if blocks(t, u("holes")) > 64 {
		t.Skip("the test dir's filesystem does not keep holes")
	}
	b := export(t, layout.Layers{Upper: d["u"]}, ExportOptions{})

	for _, e := range readTar(t, b) {
		want, err := os.ReadFile(u(e.hdr.Name))
		must(t, err)
		assert.True(t, e.data == string(want), "%s: Go's reader gives other content", e.hdr.Name)
		_, sparse := e.hdr.PAXRecords["GNU.sparse.major"]
		assert.Equal(t, e.hdr.Name != "dense", sparse, "%s: sparse form", e.hdr.Name)
		if e.hdr.Name == "holes" {
			assert.Equal(t, "kept", e.hdr.PAXRecords["SCHILY.xattr.user.sparse"])
			assert.Equal(t, int64(3<<20), e.hdr.Size)
		}
	}
	assert.Less(t, len(b), 64<<10, "the holes take room in the tarball")

	tarball := filepath.Join(t.TempDir(), "layer.tar")
	must(t, os.WriteFile(tarball, b, 0o644))
	if out, err := exec.Command("tar", "-xpf", tarball, "-C", d["out"]).CombinedOutput(); err != nil {
		t.Fatalf("GNU tar: %v %s", err, out)
	}
	for _, n := range []string{"holes", "allhole", "dense"} {
		got, err := os.ReadFile(filepath.Join(d["out"], n))
		must(t, err)
		want, _ := os.ReadFile(u(n))
		assert.True(t, bytes.Equal(want, got), "%s: GNU tar gives other content", n)
	}
	if out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "-xpf", tarball, "-C", d["out"], "holes").CombinedOutput(); err != nil {
		t.Fatalf("GNU tar --xattrs: %v %s", err, out)
	}
	v := make([]byte, 16)
	n, err := unix.Getxattr(filepath.Join(d["out"], "holes"), "user.sparse", v)
	must(t, err)
	assert.Equal(t, "kept", string(v[:n]), "GNU tar restores the sparse file's xattrs")
	assert.LessOrEqual(t, blocks(t, filepath.Join(d["out"], "holes")), int64(64), "GNU tar filled the holes")
	assert.LessOrEqual(t, blocks(t, filepath.Join(d["out"], "allhole")), int64(8), "GNU tar filled the holes")
}

func blocks(t *testing.T, p string) int64 {
	var st unix.Stat_t
	must(t, unix.Stat(p, &st))
	return st.Blocks
}

// A metacopy upper file (kernel metacopy=on: chmod copies metadata only)
// is exported with its data from the lower file, also when it was renamed
// and the kernel recorded its origin in a redirect.
func TestExportMetacopy(t *testing.T) {
	needRoot(t)
	d := dirs(t, "l", "u", "w", "m")
	build(t, d["l"], "dir/f", "lower data", "g", "g data", "h", "h data")
	unmount := mountOverlay(t, d["m"], "lowerdir="+d["l"]+",upperdir="+d["u"]+",workdir="+d["w"]+",redirect_dir=on,metacopy=on")
	must(t, os.Chmod(filepath.Join(d["m"], "dir/f"), 0o600))
	must(t, os.Rename(filepath.Join(d["m"], "g"), filepath.Join(d["m"], "dir/moved")))
	unmount()
	for _, p := range []string{"dir/f", "dir/moved"} {
		if _, err := unix.Lgetxattr(filepath.Join(d["u"], p), "trusted.overlay.metacopy", nil); err != nil {
			t.Skipf("the kernel made no metacopy file of %s: %v", p, err)
		}
	}
	l := layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}}
	assert.Equal(t, lines("C /dir", "C /dir/f", "A /dir/moved", "D /g"), diffLines(t, l))
	assert.Equal(t, strings.Join([]string{
		`.wh.g 0 0 0:0 ""`,
		`dir/ 5 755 0:0`,
		`dir/f 0 600 0:0 "lower data"`,
		`dir/moved 0 644 0:0 "g data"`,
	}, "\n")+"\n", summary(readTar(t, export(t, l, ExportOptions{}))))
}

// A directory moved with redirect_dir is written whole, since OCI has no
// rename; where it replaces a directory the lowers show, it is opaque.
func TestExportRedirect(t *testing.T) {
	needRoot(t)
	d := dirs(t, "l", "u", "w", "m")
	build(t, d["l"], "a/b/f", "f", "a/b/sub/g", "g", "c/old", "o")
	unmount := mountOverlay(t, d["m"], "lowerdir="+d["l"]+",upperdir="+d["u"]+",workdir="+d["w"]+",redirect_dir=on")
	m := func(p string) string { return filepath.Join(d["m"], p) }
	must(t, os.Rename(m("a/b"), m("moved")))
	must(t, os.WriteFile(m("moved/new"), []byte("n"), 0o644))
	must(t, os.RemoveAll(m("c")))
	must(t, os.Rename(m("moved/sub"), m("c"))) // onto its whiteout
	unmount()
	l := layout.Layers{Upper: d["u"], Lowers: []string{d["l"]}}
	assert.Equal(t, lines("C /a", "D /a/b", "C /c", "A /c/g", "D /c/old", "A /moved", "A /moved/f", "A /moved/new"), diffLines(t, l))
	assert.Equal(t, strings.Join([]string{
		`a/ 5 755 0:0`,
		`a/.wh.b 0 0 0:0 ""`,
		`c/ 5 755 0:0`,
		`c/.wh..wh..opq 0 0 0:0 ""`,
		`c/g 0 644 0:0 "g"`,
		`moved/ 5 755 0:0`,
		`moved/f 0 644 0:0 "f"`,
		`moved/new 0 644 0:0 "n"`,
	}, "\n")+"\n", summary(readTar(t, export(t, l, ExportOptions{}))))
}
