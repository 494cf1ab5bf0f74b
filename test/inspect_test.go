package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

type inspected struct {
	GraphDriver struct {
		Name string
		Data map[string]string
	}
	Driver  string
	Options []string
	Stats   *struct {
		Pid                             int
		CopyUps, CopyUpBytes, Whiteouts uint64
		OpenHandles                     int64
		HeldFds                         int
		Requests                        map[string]uint64
	}
}

func inspectJSON(t *testing.T, mnt string) inspected {
	t.Helper()
	r := run(t, binary, "inspect", "--json", mnt)
	if r.code != 0 {
		t.Fatalf("inspect: exit %d: %s", r.code, r.stderr)
	}
	var got inspected
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	return got
}

// inspect on a layerfs mount: the GraphDriver data and the server's live
// counters, which follow what is done through the mount.
func TestInspectLayerfs(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 2)
	writeFile(t, filepath.Join(tr.lowers[1], "big"), strings.Repeat("x", 5000))
	writeFile(t, filepath.Join(tr.lowers[0], "a"), "a")
	writeFile(t, filepath.Join(tr.lowers[0], "b"), "b")
	tr.mount(t, "-o", "passthrough")

	got := inspectJSON(t, tr.mnt)
	assert.Equal(t, "layerfs", got.GraphDriver.Name)
	assert.Equal(t, "fuse", got.Driver)
	assert.Equal(t, map[string]string{
		"LowerDir": strings.Join(tr.lowers, ":"), "UpperDir": tr.upper,
		"WorkDir": tr.work, "MergedDir": tr.mnt,
	}, got.GraphDriver.Data)
	assert.Contains(t, got.Options, "passthrough")
	if got.Stats == nil {
		t.Fatal("no stats from the server")
	}
	assert.Zero(t, got.Stats.CopyUps)
	assert.NotZero(t, got.Stats.Pid)

	f, err := os.OpenFile(filepath.Join(tr.mnt, "big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	noErr(t, os.Remove(filepath.Join(tr.mnt, "a")))
	noErr(t, os.Remove(filepath.Join(tr.mnt, "b")))
	got = inspectJSON(t, tr.mnt)
	assert.Equal(t, uint64(1), got.Stats.CopyUps)
	assert.Equal(t, uint64(5000), got.Stats.CopyUpBytes)
	// The kernel's requests, by kind: two unlinks, one open for the
	// append (passthrough), lookups of the three names.
	assert.Equal(t, uint64(2), got.Stats.Requests["UNLINK"])
	assert.Equal(t, uint64(1), got.Stats.Requests["OPEN"])
	assert.GreaterOrEqual(t, got.Stats.Requests["LOOKUP"], uint64(3))
	assert.Equal(t, uint64(2), got.Stats.Whiteouts)
	assert.Equal(t, int64(1), got.Stats.OpenHandles, "the open passthrough handle")
	f.Close()
	// RELEASE reaches the server after close returns.
	for i := 0; i < 50 && inspectJSON(t, tr.mnt).Stats.OpenHandles != 0; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	assert.Zero(t, inspectJSON(t, tr.mnt).Stats.OpenHandles)

	r := run(t, binary, "inspect", tr.mnt)
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "LowerDir:    "+tr.lowers[0]+"\n             "+tr.lowers[1]+"\n")
	assert.Contains(t, r.stdout, "CopyUps:     1 (4.9 KiB copied)")
	assert.Contains(t, r.stdout, "Whiteouts:   2")
	assert.Regexp(t, `Requests:    .*UNLINK 2`, r.stdout)

	// The status is the server's: read-only, never listed, only on the root.
	assert.Equal(t, unix.EPERM, unix.Setxattr(tr.mnt, "user.layerfs.status", []byte("x"), 0))
	buf := make([]byte, 4096)
	n, _ := unix.Listxattr(tr.mnt, buf)
	assert.NotContains(t, string(buf[:n]), "layerfs")
	_, err = unix.Getxattr(filepath.Join(tr.mnt, "big"), "user.layerfs.status", buf)
	assert.Equal(t, unix.ENODATA, err)
	tr.unmount(t)
}

// inspect on kernel overlay reads mountinfo, also for the lowerdir+ form
// and paths that need escaping.
func TestInspectKernel(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 2)
	odd := filepath.Join(tr.root, "lower, with comma")
	noErr(t, os.Mkdir(odd, 0o755))
	tr.lowers = append(tr.lowers, odd)
	cleanupMount(t, tr.mnt)
	if r := run(t, binary, "--driver=kernel", "--lower", tr.lowers[0], "--lower", tr.lowers[1], "--lower", odd,
		"--upper", tr.upper, "--work", tr.work, tr.mnt); r.code != 0 {
		t.Fatalf("kernel mount: %s", r.stderr)
	}
	got := inspectJSON(t, tr.mnt)
	assert.Equal(t, "overlay", got.GraphDriver.Name)
	assert.Equal(t, "kernel", got.Driver)
	assert.Equal(t, strings.Join(tr.lowers, ":"), got.GraphDriver.Data["LowerDir"])
	assert.Equal(t, tr.upper, got.GraphDriver.Data["UpperDir"])
	assert.Equal(t, tr.work, got.GraphDriver.Data["WorkDir"])
	assert.Nil(t, got.Stats)
	noErr(t, unix.Unmount(tr.mnt, 0))
}

// inspect as the plain user who mounted: the status xattr is readable.
func TestInspectPlainUser(t *testing.T) {
	uid, gid := plainUser(t)
	tr := userTree(t, uid, gid)
	cleanupMount(t, tr.mnt)
	r := asUser(t, uid, gid, fmt.Sprintf(`
		"$LAYERFS" -o %s %s
		"$LAYERFS" inspect %[2]s
		fusermount3 -u %[2]s
	`, tr.opts(), tr.mnt))
	if r.code != 0 {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	assert.Contains(t, r.stdout, "Driver:      fuse (layerfs")
	assert.Contains(t, r.stdout, "UpperDir:    "+tr.upper)
}

func TestInspectBadInput(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	noErr(t, unix.Mount("tmpfs", d, "tmpfs", 0, ""))
	defer unix.Unmount(d, unix.MNT_DETACH)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect"}, "want one MOUNTPOINT"},
		{[]string{"inspect", "/nonexistent/x"}, "is not a mount point"},
		{[]string{"inspect", t.TempDir()}, "is not a mount point"},
		{[]string{"inspect", d}, "is a tmpfs mount, not a union"},
		{[]string{"inspect", "--bogus", d}, "unknown flag"},
	} {
		r := run(t, binary, tc.args...)
		assert.Equal(t, 2, r.code, "%v", tc.args)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: one line: %q", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
	r := run(t, binary, "inspect", "--help")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stderr, "Examples:")
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
