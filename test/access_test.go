package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// otherUID is a user that never mounts: it only enters mounts.
const otherUID = 1001

// enterable lets every user reach tr's mount point.
func enterable(t *testing.T, tr *tree) {
	t.Helper()
	for _, p := range []string{tr.root, filepath.Dir(tr.root)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// asOther runs a shell script as otherUID with no groups.
func asOther(t *testing.T, script string) result {
	t.Helper()
	id := strconv.Itoa(otherUID)
	return runCmd(t, exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--", "/bin/sh", "-ec", script))
}

// A root mount serves every user (as kernel overlay does): another user
// reads, lists and creates files it owns; with -o private it cannot
// enter.
func TestOthersEnterRootMount(t *testing.T) {
	needRoot(t)
	needCmd(t, "setpriv")
	tr := newTree(t, 1)
	enterable(t, tr)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "lower")
	shared := filepath.Join(tr.lowers[0], "shared")
	if err := os.Mkdir(shared, 0o755); err != nil || os.Chmod(shared, 0o777) != nil {
		t.Fatal(err)
	}
	tr.mount(t)
	r := asOther(t, fmt.Sprintf("cat %[1]s/f; ls %[1]s; echo mine > %[1]s/shared/new; stat -c %%u %[1]s/shared/new", tr.mnt))
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "lowerf\nshared\n"+strconv.Itoa(otherUID)+"\n", r.stdout)
	assert.Contains(t, mountOptions(t, tr.mnt), "allow_other")
	tr.unmount(t)

	tr.mount(t, "-o", "private")
	r = asOther(t, "ls "+tr.mnt)
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "Permission denied")
	assert.NotContains(t, mountOptions(t, tr.mnt), "allow_other")
}

// A plain user's mount lets others in exactly where /etc/fuse.conf has
// user_allow_other; without it, the mount works for its user, others get
// EACCES, and layerfs says so in one line.
func TestOthersEnterPlainUserMount(t *testing.T) {
	uid, gid := plainUser(t)
	tr := userTree(t, uid, gid)
	enterable(t, tr)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "lower")
	os.Lchown(filepath.Join(tr.lowers[0], "f"), uid, gid)
	cleanupMount(t, tr.mnt)
	conf := "/etc/fuse.conf"
	old, err := os.ReadFile(conf)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if old == nil {
			os.Remove(conf)
		} else {
			os.WriteFile(conf, old, 0o644)
		}
	})
	for _, allow := range []bool{false, true} {
		body := "# mount_max = 1000\n"
		if allow {
			body += "user_allow_other\n"
		}
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r := asUser(t, uid, gid, fmt.Sprintf(`"$LAYERFS" -o %s %s; cat %[2]s/f`, tr.opts(), tr.mnt))
		if r.code != 0 {
			t.Fatalf("allow=%v: the user's own mount: exit %d: %s", allow, r.code, r.stderr)
		}
		warned := strings.Contains(r.stderr, "other users cannot enter this mount")
		o := asOther(t, "cat "+tr.mnt+"/f")
		if allow {
			assert.False(t, warned, r.stderr)
			assert.Equal(t, 0, o.code, o.stderr)
			assert.Equal(t, "lower", o.stdout)
		} else {
			assert.True(t, warned, "no warning: %q", r.stderr)
			assert.NotEqual(t, 0, o.code)
			assert.Contains(t, o.stderr, "Permission denied")
		}
		if r := asUser(t, uid, gid, "fusermount3 -u "+tr.mnt); r.code != 0 {
			t.Fatal(r.stderr)
		}
		waitUnmounted(t, tr.mnt)
	}
}

// mountOptions returns the options /proc/mounts shows for mountpoint p.
func mountOptions(t *testing.T, p string) string {
	t.Helper()
	return strings.Fields(mountLine(t, p))[3]
}
