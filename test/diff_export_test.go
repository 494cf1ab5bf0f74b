package test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

// dxDiffWant is what `layerfs diff` must print after dxChange.
const dxDiffWant = `C /chmod-me
C /d
D /d/old
C /dir-to-replace
D /dir-to-replace/a
A /dir-to-replace/c
D /dir-to-replace/sub
C /etc
C /etc/motd
A /fifo
D /gone
A /hardlink
C /link-src
A /moved
A /moved/f
A /moved/sub
A /moved/sub/g
D /mv-src
A /new
A /new/sub
A /new/sub/f
A /newsym
A /null
C /own-me
A /sparse
A /suid-new
C /tmp
C /xattr-me
`

// dxFill makes two lower layers with something of every kind.
func dxFill(t *testing.T, tr *tree) {
	l1, l2 := tr.lowers[0], tr.lowers[1]
	for p, c := range map[string]string{
		"etc/motd": "base", "etc/passwd": "root:x:0:0::/root:/bin/sh\n", "d/keep": "k", "d/old": "o",
		"gone/z": "z", "dir-to-replace/a": "a", "dir-to-replace/sub/b": "b", "mv-src/f": "f",
		"mv-src/sub/g": "g", "chmod-me": "c", "own-me": "o", "xattr-me": "x", "link-src": "l",
		"pair1": "shared", "suid": "s", "tmp/.keep": "",
	} {
		writeFile(t, filepath.Join(l2, p), c)
	}
	writeFile(t, filepath.Join(l1, "etc/motd"), "l1")
	writeFile(t, filepath.Join(l1, "top"), "t")
	noErr(t, os.Link(filepath.Join(l2, "pair1"), filepath.Join(l2, "pair2")))
	noErr(t, unix.Chmod(filepath.Join(l2, "suid"), 0o4755))
	noErr(t, os.Symlink("etc/motd", filepath.Join(l2, "sym")))
	noErr(t, unix.Mkfifo(filepath.Join(l2, "lfifo"), 0o644))
	noErr(t, unix.Setxattr(filepath.Join(l2, "xattr-me"), "user.lower", []byte("1"), 0))
}

// dxChange makes the changes of dxDiffWant through the mount m.
func dxChange(t *testing.T, m string) {
	p := func(s string) string { return filepath.Join(m, s) }
	dxAppend(t, p("etc/motd"), " c1")
	noErr(t, os.Remove(p("d/old")))
	noErr(t, os.RemoveAll(p("gone")))
	noErr(t, os.RemoveAll(p("dir-to-replace")))
	writeFile(t, p("dir-to-replace/c"), "new")
	// mv: a rename where the union renames directories, else a copy.
	if r := run(t, "mv", p("mv-src"), p("moved")); r.code != 0 {
		t.Fatalf("mv: %s", r.stderr)
	}
	writeFile(t, p("new/sub/f"), "n")
	noErr(t, os.Link(p("link-src"), p("hardlink")))
	dxAppend(t, p("hardlink"), " via the link")
	noErr(t, os.Chmod(p("chmod-me"), 0o600))
	noErr(t, os.Chown(p("own-me"), 12, 34))
	noErr(t, unix.Setxattr(p("xattr-me"), "user.added", []byte("yes"), 0))
	noErr(t, unix.Mkfifo(p("fifo"), 0o600))
	noErr(t, unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	noErr(t, os.Symlink("etc/motd", p("newsym")))
	writeFile(t, p("sparse"), "head")
	f, err := os.OpenFile(p("sparse"), os.O_WRONLY, 0)
	noErr(t, err)
	_, err = f.WriteAt([]byte("middle"), 1<<20)
	noErr(t, err)
	noErr(t, f.Truncate(4<<20))
	noErr(t, f.Close())
	writeFile(t, p("suid-new"), "#!/bin/sh\n")
	noErr(t, unix.Chmod(p("suid-new"), 0o4755))
	writeFile(t, p("tmp/scratch"), "made and removed")
	noErr(t, os.Remove(p("tmp/scratch")))
	writeFile(t, p("fleeting"), "made and removed")
	noErr(t, os.Remove(p("fleeting")))
}

func dxAppend(t *testing.T, p, s string) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	noErr(t, err)
	_, err = f.WriteString(s)
	noErr(t, err)
	noErr(t, f.Close())
}

// dxKernelMount mounts tr with kernel overlay, redirect_dir and metacopy
// on: moved dirs get redirects, chmod and chown make metacopy files.
func dxKernelMount(t *testing.T, tr *tree) {
	cleanupMount(t, tr.mnt)
	if err := unix.Mount("overlay", tr.mnt, "overlay", 0, tr.opts()+",redirect_dir=on,metacopy=on"); err != nil {
		t.Fatalf("mount -t overlay: %v", err)
	}
}

// Changes made through a kernel overlay mount and through a layerfs
// mount: diff prints them exactly, in every form of the command, and an
// exported layer unpacked onto the lowers gives the merged view.
func TestDiffExportKernel(t *testing.T) {
	needRoot(t)
	dxDiffExport(t, dxKernelMount)
}

func TestDiffExportLayerfs(t *testing.T) {
	needRoot(t)
	needCmd(t, "fusermount3")
	dxDiffExport(t, func(t *testing.T, tr *tree) { tr.mount(t) })
}

func dxDiffExport(t *testing.T, mount func(*testing.T, *tree)) {
	needCmd(t, "tar")
	tr := newTree(t, 2)
	dxFill(t, tr)
	mount(t, tr)
	dxChange(t, tr.mnt)

	r := run(t, binary, "diff", tr.mnt)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, dxDiffWant, r.stdout)
	assert.Empty(t, r.stderr)
	lowers := strings.Join(tr.lowers, ":")
	for _, args := range [][]string{
		{"diff", "--upper", tr.upper, "--lower", lowers},
		{"diff", "--lower", tr.lowers[0], "--upper", tr.upper, "--lower", tr.lowers[1]},
	} {
		r := run(t, binary, args...)
		assert.Equal(t, 0, r.code, r.stderr)
		assert.Equal(t, dxDiffWant, r.stdout, "%v", args)
	}
	r = run(t, binary, "diff", "--json", tr.mnt)
	assert.Equal(t, 0, r.code, r.stderr)
	var list []struct{ Path, Kind string }
	noErr(t, json.Unmarshal([]byte(r.stdout), &list))
	var fromJSON strings.Builder
	for _, c := range list {
		fmt.Fprintf(&fromJSON, "%s %s\n", c.Kind, c.Path)
	}
	assert.Equal(t, dxDiffWant, fromJSON.String())

	tarball := filepath.Join(tr.root, "layer.tar")
	r = run(t, binary, "export", "-o", tarball, tr.mnt)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Empty(t, r.stderr, "no progress or warnings off a terminal")
	want := dxWalk(t, tr.mnt)
	target := dxLowerCopy(t, tr)
	dxApply(t, tarball, target)
	assert.Equal(t, want, dxWalk(t, target), "the lowers with the exported layer on top differ from the merged view")

	// Reproducible: the same bytes again, on stdout, and from a copy.
	stdout := filepath.Join(tr.root, "stdout.tar")
	dxExportTo(t, stdout, "--upper", tr.upper, "--lower", lowers)
	assert.True(t, dxSameFile(t, tarball, stdout), "a second export differs")
	cp := filepath.Join(tr.root, "copy")
	noErr(t, os.Mkdir(cp, 0o755))
	if r := run(t, "cp", "-a", tr.upper, tr.lowers[0], tr.lowers[1], cp); r.code != 0 {
		t.Fatalf("cp -a: %s", r.stderr)
	}
	a, b := filepath.Join(tr.root, "a.tar"), filepath.Join(tr.root, "b.tar")
	dxExportTo(t, a, "--mtime", "2024-01-02T03:04:05Z", tr.mnt)
	dxExportTo(t, b, "--mtime", "@1704164645", "--upper", filepath.Join(cp, "upper"),
		"--lower", filepath.Join(cp, "lower1")+":"+filepath.Join(cp, "lower2"))
	assert.True(t, dxSameFile(t, a, b), "the export of a cp -a copy with --mtime differs")
}

// dxExportTo runs layerfs export with stdout to the file out.
func dxExportTo(t *testing.T, out string, args ...string) {
	f, err := os.Create(out)
	noErr(t, err)
	defer f.Close()
	cmd := exec.Command(binary, append([]string{"export"}, args...)...)
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("layerfs export %v: %v %s", args, err, stderr.String())
	}
}

func dxSameFile(t *testing.T, a, b string) bool {
	x, err := os.ReadFile(a)
	noErr(t, err)
	y, err := os.ReadFile(b)
	noErr(t, err)
	return len(x) > 0 && bytes.Equal(x, y)
}

// dxLowerCopy copies what the lowers of tr show (through a read-only
// kernel overlay of them) to a new directory.
func dxLowerCopy(t *testing.T, tr *tree) string {
	mnt := filepath.Join(tr.root, "lowers-merged")
	dst := filepath.Join(tr.root, "target")
	noErr(t, os.Mkdir(mnt, 0o755))
	cleanupMount(t, mnt)
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(tr.lowers, ":")); err != nil {
		t.Fatalf("read-only overlay of the lowers: %v", err)
	}
	if r := run(t, "cp", "-a", mnt, dst); r.code != 0 {
		t.Fatalf("cp -a: %s", r.stderr)
	}
	noErr(t, unix.Unmount(mnt, 0))
	return dst
}

// dxApply unpacks an OCI layer onto dir by the spec's rules: whiteouts
// apply to what lies below only, so first an opaque marker empties its
// directory, ".wh.X" removes X, and an entry replacing one of another
// type (file and directory) removes it; then GNU tar extracts the rest.
func dxApply(t *testing.T, tarball, dir string) {
	f, err := os.Open(tarball)
	noErr(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		noErr(t, err)
		name := strings.TrimSuffix(h.Name, "/")
		parent, base := filepath.Split(filepath.Join(dir, name))
		switch {
		case base == ".wh..wh..opq":
			ents, err := os.ReadDir(parent)
			noErr(t, err)
			for _, e := range ents {
				noErr(t, os.RemoveAll(filepath.Join(parent, e.Name())))
			}
		case strings.HasPrefix(base, ".wh."):
			noErr(t, os.RemoveAll(filepath.Join(parent, strings.TrimPrefix(base, ".wh."))))
		default:
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err == nil && fi.IsDir() != (h.Typeflag == tar.TypeDir) {
				noErr(t, os.RemoveAll(filepath.Join(dir, name)))
			}
		}
	}
	r := run(t, "tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", tarball, "-C", dir, "--exclude=.wh.*")
	if r.code != 0 {
		t.Fatalf("tar -x: %s", r.stderr)
	}
}

// dxWalk describes every entry under root but root itself: path, type
// and mode bits, owner, content hash, symlink target or device number,
// user xattrs, and for names of one inode the first of them.
func dxWalk(t *testing.T, root string) string {
	var b strings.Builder
	first := map[uint64]string{}
	count := map[uint64]int{}
	var lines []struct {
		line string
		ino  uint64
	}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		noErr(t, unix.Lstat(p, &st))
		line := fmt.Sprintf("%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			noErr(t, err)
			line += fmt.Sprintf(" %d %x", len(data), sha256.Sum256(data))
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		line += " " + xattrList(p, false)
		ino := uint64(0)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			ino = st.Ino
			count[ino]++
			if _, ok := first[ino]; !ok {
				first[ino] = rel
			}
		}
		lines = append(lines, struct {
			line string
			ino  uint64
		}{line, ino})
		return nil
	})
	noErr(t, err)
	for _, l := range lines {
		b.WriteString(l.line)
		if l.ino != 0 && count[l.ino] > 1 {
			b.WriteString(" linked with " + first[l.ino])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Bad input: one line on stderr naming the command, exit 2, nothing on
// stdout; --help: usage with examples, exit 0.
func TestDiffExportBadInput(t *testing.T) {
	dir := t.TempDir()
	up, low := filepath.Join(dir, "u"), filepath.Join(dir, "l")
	noErr(t, os.Mkdir(up, 0o755))
	noErr(t, os.Mkdir(low, 0o755))
	for _, cmd := range []string{"diff", "export"} {
		out := []string{"-o", filepath.Join(dir, "out.tar")}
		if cmd == "diff" {
			out = nil
		}
		for _, args := range [][]string{
			{},
			{"--upper", up},
			{"--upper", filepath.Join(dir, "missing"), "--lower", low},
			{"--upper", up, "--lower", low + ":" + filepath.Join(dir, "missing")},
			{"--upper", up, "--lower", low + ":" + up},
			{"--upper", up, "--lower", filepath.Join(dir, "u/")},
			{"--upper", filepath.Join(dir, "u") + "/../u", "--lower", up},
			{"--upper", up, "--lower", low, dir},
			{filepath.Join(dir, "missing")},
			{dir},     // not a mount point
			{"/proc"}, // a mount, not a union
			{"a", "b"},
			{"--frobnicate", dir},
		} {
			if len(args) == 2 && args[0] == "--upper" {
				// --upper alone is fine: a layer over nothing.
				r := run(t, binary, append(append([]string{cmd}, out...), args...)...)
				assert.Equal(t, 0, r.code, "%s %v: %s", cmd, args, r.stderr)
				continue
			}
			r := run(t, binary, append(append([]string{cmd}, out...), args...)...)
			assert.Equal(t, 2, r.code, "%s %v", cmd, args)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%s %v: %q", cmd, args, r.stderr)
			assert.True(t, strings.HasPrefix(r.stderr, "layerfs "+cmd+": "), "%s %v: %q", cmd, args, r.stderr)
			assert.Empty(t, r.stdout, "%s %v", cmd, args)
		}
		r := run(t, binary, cmd, "--help")
		assert.Equal(t, 0, r.code)
		assert.Contains(t, r.stdout+r.stderr, "Examples:")
		assert.Contains(t, r.stdout+r.stderr, "layerfs "+cmd+" ")
	}
	for _, args := range [][]string{
		{"--mtime", "yesterday", "--upper", up, "--lower", low},
		{"--mtime", "@1.5", "--upper", up, "--lower", low},
		{"-o", filepath.Join(dir, "missing", "out.tar"), "--upper", up, "--lower", low},
	} {
		r := run(t, binary, append([]string{"export"}, args...)...)
		assert.Equal(t, 2, r.code, "%v", args)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: %q", args, r.stderr)
	}

	// A tarball is never written to a terminal.
	pty := dxTerminal(t)
	cmd := exec.Command(binary, "export", "--upper", up, "--lower", low)
	cmd.Stdout = pty
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	ee, ok := err.(*exec.ExitError)
	if assert.True(t, ok, "export to a terminal: %v", err) {
		assert.Equal(t, 2, ee.ExitCode())
	}
	assert.Contains(t, stderr.String(), "terminal")
}

// dxTerminal opens the far end of a new pseudo-terminal.
func dxTerminal(t *testing.T) *os.File {
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	unlock := 0
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, ptm.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	noErr(t, err)
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	noErr(t, err)
	t.Cleanup(func() { pts.Close() })
	return pts
}
