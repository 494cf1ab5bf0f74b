package test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The seed tutorial (Docker overlay2 chapter, 4.1) step for step, through
// the command as a container engine calls it.
func TestTutorialCLI(t *testing.T) {
	needRoot(t)
	needCmd(t, "fusermount3")
	tr := newTree(t, 2)
	writeFile(t, filepath.Join(tr.lowers[0], "lower1_file"), "")
	writeFile(t, filepath.Join(tr.lowers[1], "lower2_file"), "")
	writeFile(t, filepath.Join(tr.upper, "upper_file"), "")
	tr.mount(t)

	assert.Equal(t, "lower1_file lower2_file upper_file", lsNames(t, tr.mnt))
	f, err := os.OpenFile(filepath.Join(tr.mnt, "lower1_file"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("from_merged\n")
	f.Close()
	assert.Equal(t, "from_merged\n", readFile(t, filepath.Join(tr.upper, "lower1_file")))
	assert.Equal(t, "", readFile(t, filepath.Join(tr.lowers[0], "lower1_file")))
	writeFile(t, filepath.Join(tr.mnt, "merged_file"), "")
	assert.Equal(t, "lower1_file merged_file upper_file", lsNames(t, tr.upper))
	tr.unmount(t)
	assert.Equal(t, "lower1_file merged_file upper_file", lsNames(t, tr.upper))
	assert.Equal(t, "from_merged\n", readFile(t, filepath.Join(tr.upper, "lower1_file")))
}

// Exactly what podman sends: -o first, empty items, volatile, then the
// mount point; and -o after the mount point, repeated.
func TestOptionForms(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "x")
	cleanupMount(t, tr.mnt)
	r := run(t, binary, "--driver=fuse", "-o", tr.opts()+",,volatile,context=\"system_u:object_r:container_file_t:s0\"", tr.mnt)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "", r.stderr)
	assert.Equal(t, "x", readFile(t, filepath.Join(tr.mnt, "f")))
	tr.unmount(t)

	r = run(t, binary, tr.mnt, "--driver=fuse", "-o", "lowerdir="+tr.lowers[0], "-o", "upperdir="+tr.upper+",workdir="+tr.work, "-o", "frobnicate")
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one warning line: %q", r.stderr)
	assert.Contains(t, r.stderr, "frobnicate")
	writeFile(t, filepath.Join(tr.mnt, "new"), "y")
	assert.Equal(t, "y", readFile(t, filepath.Join(tr.upper, "new")))
	tr.unmount(t)

	r = run(t, binary, "--version")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "layerfs: version")
}

// Friendly flags, a symlinked lowerdir and a read-only union.
func TestReadOnlyUnionAndFlags(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 2)
	writeFile(t, filepath.Join(tr.lowers[0], "top"), "1")
	writeFile(t, filepath.Join(tr.lowers[1], "top"), "2")
	writeFile(t, filepath.Join(tr.lowers[1], "bottom"), "b")
	link := filepath.Join(tr.root, "l1-link")
	if err := os.Symlink(tr.lowers[0], link); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, tr.root)
	cleanupMount(t, tr.mnt)
	r := run(t, binary, "--driver=fuse", "--lower", link, "--lower", tr.lowers[1], tr.mnt)
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "1", readFile(t, filepath.Join(tr.mnt, "top")))
	assert.Equal(t, "b", readFile(t, filepath.Join(tr.mnt, "bottom")))
	for name, op := range map[string]func() error{
		"create": func() error { return os.WriteFile(filepath.Join(tr.mnt, "n"), nil, 0o644) },
		"append": func() error {
			f, err := os.OpenFile(filepath.Join(tr.mnt, "top"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"unlink": func() error { return os.Remove(filepath.Join(tr.mnt, "top")) },
		"mkdir":  func() error { return os.Mkdir(filepath.Join(tr.mnt, "d"), 0o755) },
		"chmod":  func() error { return os.Chmod(filepath.Join(tr.mnt, "top"), 0o600) },
	} {
		assert.ErrorIs(t, op(), syscall.EROFS, name)
	}
	tr.unmount(t)
	assert.Equal(t, before, snapshot(t, tr.root), "a read-only union changed its layers")
}

// A read-only mount of layers a writable mount is using (containerd mounts
// a running container's snapshot again, with ro, to read its /etc/passwd):
// it shows the union as the writable mount does, takes no work dir, and
// refuses writes; the writable mount and the layers go on unchanged.
func TestReadOnlyBesideWritableMount(t *testing.T) {
	needRoot(t)
	needCmd(t, "setpriv")
	tr := newTree(t, 1)
	enterable(t, tr)
	writeFile(t, filepath.Join(tr.lowers[0], "etc/passwd"), "root:x:0:0::/root:/bin/sh\n")
	writeFile(t, filepath.Join(tr.lowers[0], "gone"), "g")
	writeFile(t, filepath.Join(tr.lowers[0], "dir/a"), "a")
	tr.mount(t)
	dxAppend(t, filepath.Join(tr.mnt, "etc/passwd"), "app:x:1000:1000::/:/bin/sh\n")
	noErr(t, os.Remove(filepath.Join(tr.mnt, "gone")))
	noErr(t, os.RemoveAll(filepath.Join(tr.mnt, "dir")))
	writeFile(t, filepath.Join(tr.mnt, "dir/b"), "b")

	ro := filepath.Join(tr.root, "ro")
	noErr(t, os.Mkdir(ro, 0o755))
	cleanupMount(t, ro)
	upperBefore, workBefore := snapshot(t, tr.upper), snapshot(t, tr.work)
	r := run(t, binary, "--driver=fuse", "-o", tr.opts()+",ro", ro)
	if r.code != 0 {
		t.Fatalf("a read-only mount beside the writable one: exit %d: %s", r.code, r.stderr)
	}
	for _, p := range []string{"etc/passwd", "dir/b"} {
		assert.Equal(t, readFile(t, filepath.Join(tr.mnt, p)), readFile(t, filepath.Join(ro, p)), p)
	}
	for _, p := range []string{"gone", "dir/a"} {
		_, err := os.Lstat(filepath.Join(ro, p))
		assert.ErrorIs(t, err, fs.ErrNotExist, "%s was removed through the writable mount", p)
	}
	assert.ErrorIs(t, os.WriteFile(filepath.Join(ro, "new"), nil, 0o644), syscall.EROFS)
	// Another user (the container's) reads it too, and may not write.
	r = asOther(t, fmt.Sprintf("cat %[1]s/etc/passwd; ls %[1]s/dir; touch %[1]s/dir/other || echo refused", ro))
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\nb\nrefused\n", r.stdout)
	assert.Contains(t, r.stderr, "Read-only file system")
	if r := run(t, "umount", ro); r.code != 0 {
		t.Fatalf("umount: %s", r.stderr)
	}
	assert.Equal(t, upperBefore, snapshot(t, tr.upper), "the read-only mount changed the upper dir")
	assert.Equal(t, workBefore, snapshot(t, tr.work), "the read-only mount changed the work dir")
	writeFile(t, filepath.Join(tr.mnt, "still"), "writable")
	tr.unmount(t)
}

// SIGTERM unmounts and ends the server; so does umount.
func TestSignalsAndUmount(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	cleanupMount(t, tr.mnt)
	cmd := exec.Command(binary, "--driver=fuse", "-f", "-o", tr.opts(), tr.mnt)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitMounted(t, tr.mnt)
	cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, cmd)
	assert.False(t, isMounted(tr.mnt))

	cmd = exec.Command(binary, "--driver=fuse", "-f", "-o", tr.opts(), tr.mnt)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitMounted(t, tr.mnt)
	if r := run(t, "umount", tr.mnt); r.code != 0 {
		t.Fatalf("umount: %s", r.stderr)
	}
	waitExit(t, cmd)
}

func waitMounted(t *testing.T, p string) {
	t.Helper()
	// Generous: on a loaded 2-core machine a server can take seconds to
	// start (a wait, not a measure of speed).
	for i := 0; i < 600 && !isMounted(p); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if !isMounted(p) {
		t.Fatalf("%s never got mounted", p)
	}
}

func waitExit(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Errorf("server exited %d", ee.ExitCode())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("server did not exit")
	}
}

// Bad input: one clear line, exit status 2, nothing mounted, nothing
// created or changed anywhere.
func TestBadInput(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "x")
	writeFile(t, filepath.Join(tr.root, "plainfile"), "")
	other := filepath.Join(tr.root, "otherfs")
	os.Mkdir(other, 0o755)
	if r := run(t, "mount", "-t", "tmpfs", "tmpfs", other); r.code != 0 {
		t.Fatalf("mount tmpfs: %s", r.stderr)
	}
	t.Cleanup(func() { exec.Command("umount", other).Run() })
	os.Mkdir(filepath.Join(other, "w"), 0o755)
	lower, upper, work, mnt := tr.lowers[0], tr.upper, tr.work, tr.mnt
	os.Mkdir(filepath.Join(lower, "inner"), 0o755)
	os.Mkdir(filepath.Join(mnt, "inner"), 0o755)
	cases := []struct {
		name string
		args []string
		msg  string
	}{
		{"no lowerdir", []string{"-o", "upperdir=" + upper + ",workdir=" + work, mnt}, "no lower directory"},
		{"lowerdir missing", []string{"-o", "lowerdir=" + tr.root + "/nope", mnt}, "does not exist"},
		{"lowerdir is a file", []string{"-o", "lowerdir=" + tr.root + "/plainfile", mnt}, "not a directory"},
		{"upper without work", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper, mnt}, "without workdir"},
		{"work without upper", []string{"-o", "lowerdir=" + lower + ",workdir=" + work, mnt}, "without upperdir"},
		{"work on other fs", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + other + "/w", mnt}, "same filesystem"},
		{"upper inside lower", []string{"-o", "lowerdir=" + lower + ",upperdir=" + lower + "/inner,workdir=" + work, mnt}, "inside lowerdir"},
		{"work inside mountpoint", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + mnt + "/inner", mnt}, "inside the mountpoint"},
		{"mountpoint inside lower", []string{"-o", "lowerdir=" + lower, lower + "/inner"}, "inside lowerdir"},
		{"mountpoint missing", []string{"-o", "lowerdir=" + lower, tr.root + "/nomnt"}, "does not exist"},
		{"mountpoint not a dir", []string{"-o", "lowerdir=" + lower, tr.root + "/plainfile"}, "not a directory"},
		{"no mountpoint", []string{"-o", "lowerdir=" + lower}, "no mountpoint"},
		{"empty lowerdir", []string{"-o", "lowerdir=", mnt}, "lowerdir needs a value"},
		{"empty layer", []string{"-o", "lowerdir=" + lower + "::" + lower, mnt}, "empty layer"},
		{"bad fsync", []string{"-o", "lowerdir=" + lower + ",fsync=maybe", mnt}, "fsync"},
		{"unknown flag", []string{"--frobnicate", mnt}, "unknown flag"},
		{"bad mapping", []string{"-o", "lowerdir=" + lower + ",uidmapping=0:1000", mnt}, "uidmapping"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, tr.root)
			cleanupMount(t, mnt)
			r := run(t, binary, c.args...)
			assert.Equal(t, 2, r.code, "stderr: %s", r.stderr)
			assert.Contains(t, r.stderr, c.msg)
			assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
			assert.NotContains(t, r.stderr, "panic")
			assert.False(t, isMounted(mnt), "mounted despite bad input")
			assert.Equal(t, before, snapshot(t, tr.root), "bad input changed the layers")
		})
	}
}
