package test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
)

const testUser = "layerfs-test"

// plainUser returns the uid/gid of a non-root test user, creating it, and
// opens /dev/fuse to it for the test (restored after).
func plainUser(t *testing.T) (uid, gid int) {
	t.Helper()
	needRoot(t)
	needCmd(t, "setpriv")
	needCmd(t, "fusermount3")
	u, err := user.Lookup(testUser)
	if err != nil {
		if r := run(t, "useradd", "--system", "--no-create-home", "--shell", "/bin/sh", testUser); r.code != 0 {
			t.Fatalf("useradd: %s", r.stderr)
		}
		u, err = user.Lookup(testUser)
		if err != nil {
			t.Fatal(err)
		}
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/fuse", &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod("/dev/fuse", os.FileMode(st.Mode&0o7777)) })
	return uid, gid
}

// asUser runs a shell script as the test user.
func asUser(t *testing.T, uid, gid int, script string) result {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid), "--clear-groups", "--", "/bin/sh", "-ec", script)
	cmd.Env = append(os.Environ(), "LAYERFS="+binary)
	return runCmd(t, cmd)
}

// userTree makes a union tree owned by the test user.
func userTree(t *testing.T, uid, gid int) *tree {
	t.Helper()
	tr := newTree(t, 2)
	os.Chmod(tr.root, 0o755)
	filepath.Walk(filepath.Dir(tr.root), func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(p, tr.root) {
			os.Lchown(p, uid, gid)
		}
		return nil
	})
	os.Chmod(filepath.Dir(tr.root), 0o755)
	return tr
}

// The tutorial as a plain user, mounting through fusermount3: whiteouts
// and opaque markers take the forms such a user may write.
func TestTutorialPlainUser(t *testing.T) {
	uid, gid := plainUser(t)
	tr := userTree(t, uid, gid)
	for p, c := range map[string]string{
		filepath.Join(tr.lowers[0], "lower1_file"):  "",
		filepath.Join(tr.lowers[1], "lower2_file"):  "",
		filepath.Join(tr.upper, "upper_file"):       "",
		filepath.Join(tr.lowers[1], "dir", "gone"):  "g",
		filepath.Join(tr.lowers[1], "dir", "stays"): "s",
	} {
		writeFile(t, p, c)
	}
	for _, p := range []string{tr.lowers[0], tr.lowers[1], filepath.Join(tr.lowers[1], "dir"), filepath.Join(tr.lowers[1], "dir", "gone"), filepath.Join(tr.lowers[1], "dir", "stays"), filepath.Join(tr.lowers[0], "lower1_file"), filepath.Join(tr.lowers[1], "lower2_file"), filepath.Join(tr.upper, "upper_file")} {
		os.Lchown(p, uid, gid)
	}
	cleanupMount(t, tr.mnt)
	r := asUser(t, uid, gid, fmt.Sprintf(`
		"$LAYERFS" -v -o %s %s 2>/dev/null
		grep -q " %[2]s fuse.layerfs " /proc/self/mounts
		ls %[2]s
		echo from_merged >> %[2]s/lower1_file
		touch %[2]s/merged_file
		rm %[2]s/dir/gone
		rm -r %[2]s/lower2_file
		ls %[2]s/dir
		fusermount3 -u %[2]s
	`, tr.opts(), tr.mnt))
	if r.code != 0 {
		t.Fatalf("as %s: exit %d: %s%s", testUser, r.code, r.stdout, r.stderr)
	}
	assert.Equal(t, "dir\nlower1_file\nlower2_file\nupper_file\nstays\n", r.stdout)
	waitUnmounted(t, tr.mnt)
	assert.Equal(t, "from_merged\n", readFile(t, filepath.Join(tr.upper, "lower1_file")))
	assert.Equal(t, "", readFile(t, filepath.Join(tr.lowers[0], "lower1_file")))
	assert.Equal(t, "g", readFile(t, filepath.Join(tr.lowers[1], "dir", "gone")))
	assert.Equal(t, "dir lower1_file lower2_file merged_file upper_file", lsNames(t, tr.upper))
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(tr.upper, "merged_file"), &st); err != nil {
		t.Fatal(err)
	}
	assert.Equal(t, uint32(uid), st.Uid, "new file owned by the user")
	assertWhiteout(t, filepath.Join(tr.upper, "dir"), "gone")
	assertWhiteout(t, tr.upper, "lower2_file")
}

// assertWhiteout checks that dir holds a whiteout for name in either form.
func assertWhiteout(t *testing.T, dir, name string) {
	t.Helper()
	var st syscall.Stat_t
	if syscall.Lstat(filepath.Join(dir, name), &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFCHR && st.Rdev == 0 {
		return
	}
	if _, err := os.Lstat(filepath.Join(dir, ".wh."+name)); err == nil {
		return
	}
	t.Errorf("no whiteout for %s in %s", name, dir)
}

// Inside a user namespace, as podman runs its mount program: uid 0 mapped
// to a plain user, mounting /dev/fuse directly. Markers go to user.overlay.*
// xattrs or char 0/0 devices, never trusted.*.
func TestUserNamespace(t *testing.T) {
	uid, gid := plainUser(t)
	needCmd(t, "unshare")
	tr := userTree(t, uid, gid)
	writeFile(t, filepath.Join(tr.lowers[0], "d", "a"), "a")
	writeFile(t, filepath.Join(tr.lowers[1], "d", "b"), "b")
	writeFile(t, filepath.Join(tr.lowers[1], "f"), "f")
	filepath.Walk(tr.root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, uid, gid)
		}
		return nil
	})
	r := asUser(t, uid, gid, fmt.Sprintf(`
		exec unshare --user --map-root-user --mount /bin/sh -ec '
			"$LAYERFS" --driver=fuse -o %s %s
			grep -q " %[2]s fuse.layerfs " /proc/self/mounts
			echo more >> %[2]s/f
			rm -r %[2]s/d
			mkdir %[2]s/d
			touch %[2]s/d/new
			ls -A %[2]s %[2]s/d
			umount %[2]s
		'
	`, tr.opts(), tr.mnt))
	if r.code != 0 {
		t.Fatalf("in user namespace: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	assert.Contains(t, r.stdout, "new")
	assert.NotContains(t, r.stdout, "\na\n")
	assert.Equal(t, "fmore\n", readFile(t, filepath.Join(tr.upper, "f")))
	// The re-created directory is opaque in a form the kernel's userxattr
	// mode (or an OCI reader) understands.
	d := filepath.Join(tr.upper, "d")
	buf := make([]byte, 8)
	n, err := syscall.Getxattr(d, "user.overlay.opaque", buf)
	_, serr := os.Stat(filepath.Join(d, ".wh..wh..opq"))
	assert.True(t, (err == nil && string(buf[:n]) == "y") || serr == nil, "d is not opaque")
	_, terr := syscall.Getxattr(d, "trusted.overlay.opaque", buf)
	assert.Error(t, terr, "a user namespace cannot write trusted.*")
	assert.Equal(t, "a", readFile(t, filepath.Join(tr.lowers[0], "d", "a")))
	assert.False(t, isMounted(tr.mnt))
}

// As podman runs its mount program (mapped root in a user namespace),
// --driver=auto picks kernel overlay with userxattr where the kernel
// allows it, and the upper gets user.overlay.* markers.
func TestUserNamespaceAutoDriver(t *testing.T) {
	uid, gid := plainUser(t)
	needCmd(t, "unshare")
	tr := userTree(t, uid, gid)
	writeFile(t, filepath.Join(tr.lowers[1], "d", "b"), "b")
	filepath.Walk(tr.root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Lchown(p, uid, gid)
		}
		return nil
	})
	r := asUser(t, uid, gid, fmt.Sprintf(`
		exec unshare --user --map-root-user --mount /bin/sh -ec '
			"$LAYERFS" -v -o %s %s
			grep " %[2]s " /proc/self/mounts | cut -d" " -f3
			rm -r %[2]s/d && mkdir %[2]s/d
			umount %[2]s
		'
	`, tr.opts(), tr.mnt))
	if r.code != 0 {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	assert.Equal(t, "overlay\n", r.stdout)
	assert.Contains(t, r.stderr, "kernel overlay")
	buf := make([]byte, 8)
	n, err := syscall.Getxattr(filepath.Join(tr.upper, "d"), "user.overlay.opaque", buf)
	if assert.NoError(t, err) {
		assert.Equal(t, "y", string(buf[:n]))
	}
}

// Permissions are the kernel's (default_permissions): through a root
// server with allow_other a plain user cannot read another user's 0600
// file, cannot write into a read-only directory, and a write of its own
// clears setuid as the kernel does; copy-up grants nothing.
func TestPermissionsThroughRootServer(t *testing.T) {
	uid, gid := plainUser(t)
	tr := newTree(t, 1)
	os.Chmod(tr.root, 0o755)
	os.Chmod(filepath.Dir(tr.root), 0o755)
	writeFile(t, filepath.Join(tr.lowers[0], "secret"), "root only")
	os.Chmod(filepath.Join(tr.lowers[0], "secret"), 0o600)
	os.Mkdir(filepath.Join(tr.lowers[0], "ro"), 0o555)
	writeFile(t, filepath.Join(tr.lowers[0], "shared"), "group writable\n")
	os.Chown(filepath.Join(tr.lowers[0], "shared"), 0, gid)
	syscall.Chmod(filepath.Join(tr.lowers[0], "shared"), 0o6775)
	tr.mount(t, "-o", "allow_other")
	r := asUser(t, uid, gid, fmt.Sprintf(`
		cat %[1]s/secret 2>/dev/null && echo READ-SECRET
		touch %[1]s/ro/new 2>/dev/null && echo WROTE-RO
		chmod 777 %[1]s/secret 2>/dev/null && echo CHMOD-OTHERS
		echo appended >> %[1]s/shared
		stat -c %%a %[1]s/shared
		getfattr -n trusted.overlay.origin %[1]s/shared 2>/dev/null && echo PRIVATE-XATTR
		true
	`, tr.mnt))
	assert.Equal(t, 0, r.code, r.stderr)
	for _, bad := range []string{"READ-SECRET", "WROTE-RO", "CHMOD-OTHERS", "PRIVATE-XATTR"} {
		assert.NotContains(t, r.stdout, bad)
	}
	assert.Contains(t, r.stdout, "775\n", "setuid/setgid not cleared by the user's write")
	assert.Equal(t, "group writable\nappended\n", readFile(t, filepath.Join(tr.upper, "shared")))
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(tr.lowers[0], "shared"), &st)
	assert.Equal(t, uint32(0o6775), st.Mode&0o7777, "the lower file changed")
}
