// Package test drives the layerfs binary the way its users do: through
// the command line, as root, as a plain user and in a user namespace, and
// checks everything through real mount points.
package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/layerfs/layerfs/test/testns"
	"golang.org/x/sys/unix"
)

// binary is the layerfs built for this test run.
var binary string

func TestMain(m *testing.M) {
	testns.Enter("test")
	dir, err := os.MkdirTemp("", "layerfs-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // a plain test user runs it too
	binary = filepath.Join(dir, "layerfs")
	build := exec.Command("go", "build", "-o", binary, "../cmd/layerfs")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building layerfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// require fails loudly in CI and skips elsewhere when the machine lacks
// what a test needs.
func require(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI must provide: %s", what)
	}
	t.Skipf("needs %s", what)
}

func needRoot(t *testing.T) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	require(t, os.Geteuid() == 0 && err == nil, "root and /dev/fuse")
}

func needCmd(t *testing.T, name string) {
	t.Helper()
	_, err := exec.LookPath(name)
	require(t, err == nil, name+" (apt-get install -y fuse3 util-linux)")
}

// result of running a command.
type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, name string, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(name, args...))
}

func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

// isMounted reports whether p is a mount point in this namespace.
func isMounted(p string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == p {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// waitUnmounted waits until p is no longer a mount point.
func waitUnmounted(t *testing.T, p string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if !isMounted(p) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s still mounted", p)
}

// cleanupMount makes sure p is unmounted when the test ends, even when it
// failed half way.
func cleanupMount(t *testing.T, p string) {
	t.Cleanup(func() {
		if !isMounted(p) {
			return
		}
		exec.Command("fusermount3", "-u", p).Run()
		if isMounted(p) {
			exec.Command("umount", p).Run()
		}
		if isMounted(p) {
			exec.Command("umount", "-l", p).Run()
		}
	})
}

// tree is a union's directories under one temp dir.
type tree struct {
	root, upper, work, mnt string
	lowers                 []string
}

func newTree(t *testing.T, nLowers int) *tree {
	t.Helper()
	root := t.TempDir()
	tr := &tree{root: root, upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work"), mnt: filepath.Join(root, "merged")}
	for i := 1; i <= nLowers; i++ {
		tr.lowers = append(tr.lowers, filepath.Join(root, fmt.Sprintf("lower%d", i)))
	}
	for _, p := range append([]string{tr.upper, tr.work, tr.mnt}, tr.lowers...) {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func (tr *tree) opts() string {
	return fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(tr.lowers, ":"), tr.upper, tr.work)
}

// mount runs layerfs (detached) and registers the unmount.
func (tr *tree) mount(t *testing.T, extra ...string) {
	t.Helper()
	cleanupMount(t, tr.mnt)
	args := append([]string{"--driver=fuse", "-o", tr.opts()}, extra...)
	r := run(t, binary, append(args, tr.mnt)...)
	if r.code != 0 {
		t.Fatalf("layerfs exited %d: %s", r.code, r.stderr)
	}
	if !isMounted(tr.mnt) {
		t.Fatalf("layerfs exited 0 but %s is not mounted", tr.mnt)
	}
}

func (tr *tree) unmount(t *testing.T) {
	t.Helper()
	if r := run(t, "fusermount3", "-u", tr.mnt); r.code != 0 {
		t.Fatalf("fusermount3 -u: %s", r.stderr)
	}
	waitUnmounted(t, tr.mnt)
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func lsNames(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

// snapshot describes every entry under dir (type, mode, size, content
// hash, xattrs), to prove that nothing changed.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", data)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// viewOpts say what treeView shows beside names, types, modes, owners,
// file sizes, content hashes, link counts, symlink targets and xattrs.
type viewOpts struct {
	ino      bool // inode numbers
	mtime    bool // modification times (ns)
	allXattr bool // every xattr, not only user.*
}

// treeView describes a tree as a user sees it, one sorted line per entry,
// to compare two trees.
func treeView(t *testing.T, root string, o viewOpts) string {
	t.Helper()
	var lines []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v uid=%d gid=%d", rel, fi.Mode(), st.Uid, st.Gid)
		if o.ino {
			line += fmt.Sprintf(" ino=%d", st.Ino)
		}
		if o.mtime {
			line += fmt.Sprintf(" mtime=%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
		}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d sha=%x nlink=%d", fi.Size(), sha256.Sum256(data), st.Nlink)
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		}
		lines = append(lines, line+" xattrs="+xattrList(p, o.allXattr))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// xattrList lists the xattrs of p (not following a symlink) as sorted
// name=value pairs: user.* ones, or all.
func xattrList(p string, all bool) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return "?"
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || !all && !strings.HasPrefix(name, "user.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, _ := unix.Lgetxattr(p, name, v)
		out = append(out, name+"="+string(v[:max(m, 0)]))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}
