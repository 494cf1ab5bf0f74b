package test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	req "github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// cvRun runs a layer tool of the binary on tr's layers.
func cvRun(t *testing.T, tr *tree, tool string, args ...string) result {
	t.Helper()
	return run(t, binary, append([]string{tool, "-o", tr.opts()}, args...)...)
}

// cvView describes a merged tree as a user sees it, with mtimes and
// every xattr listed. Inode numbers are left out: a copy made without an
// origin record has its own.
func cvView(t *testing.T, root string) string {
	t.Helper()
	return treeView(t, root, viewOpts{mtime: true, allXattr: true})
}

// cvSnapshot describes every entry of a layer dir, metadata (owner,
// ctime, all xattrs) and content, to prove a layer was not touched.
func cvSnapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	req.NoError(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		fmt.Fprintf(&b, "%s %v %d:%d size=%d rdev=%d mtime=%d.%d ctime=%d.%d ino=%d xattrs=%s", rel, fi.Mode(), st.Uid, st.Gid, st.Size, st.Rdev,
			st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec, st.Ino, xattrList(p, true))
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %x", sha256.Sum256(data))
		}
		b.WriteString("\n")
		return nil
	}))
	return b.String()
}

func cvSnapshotLowers(t *testing.T, tr *tree) []string {
	var out []string
	for _, l := range tr.lowers {
		out = append(out, cvSnapshot(t, l))
	}
	return out
}

// cvFillLowers gives two lowers a little of everything, including a
// whiteout in lower1 that hides a file of lower2.
func cvFillLowers(t *testing.T, tr *tree) {
	t.Helper()
	l1, l2 := tr.lowers[0], tr.lowers[1]
	for p, content := range map[string]string{
		"etc/config": "base\n", "etc/passwd": "root\n", "etc/group": "g\n", "etc/hosts": "h\n", "etc/stale": "s\n",
		"bin/tool": "#!/bin/sh\n", "bin/hard1": "h1\n", "var/log/x": "log\n", "usr/share/doc/readme": "doc\n",
		"usr/lib/libc": "lib\n", "deep/a/b/c": "c\n", "opaque/old": "old\n", "data/big": strings.Repeat("0123456789", 10000),
		"data/small": "small\n", "data/f1": "f1\n", "data/f2": "f2\n", "lower2only": "only\n", "gone": "gone\n",
		"data/keep": "keep\n", "bin/tool2": "tool2\n", "lib/deep/dir/file": "deep\n",
	} {
		writeFile(t, filepath.Join(l2, p), content)
	}
	req.NoError(t, os.Link(filepath.Join(l2, "bin/hard1"), filepath.Join(l2, "bin/hard2")))
	req.NoError(t, os.MkdirAll(filepath.Join(l2, "run"), 0o755))
	for p, content := range map[string]string{
		"etc/moved": "moved\n", "usr/share/doc/more": "doc1\n", "whited-in-lower1-dir/keep": "keep\n", "opaque/new": "n\n",
	} {
		writeFile(t, filepath.Join(l1, p), content)
	}
	req.NoError(t, unix.Mknod(filepath.Join(l1, "gone"), unix.S_IFCHR, 0))
}

// cvActivity is a busy session through a merged view: copy-ups of every
// trigger, deletions of lower files and directories, directories made
// again (opaque), renames of files and directories (and back), hard
// links of lower files, symlinks, fifos, and copy-ups that change
// nothing in the end (for vacuum to find).
const cvActivity = `
set -e
cd "$1"
echo more >> etc/config
chmod 600 etc/passwd
chown 1:1 etc/group 2>/dev/null || chmod 640 etc/group
touch -d 2001-01-01 etc/hosts
setfattr -n user.tag -v v1 bin/tool
rm etc/stale
rm -rf var/log
mkdir var/log
echo new > var/log/new
mv etc/moved etc/renamed
mv etc/renamed etc/renamed2
mv usr/share/doc usr/doc
mv usr/doc usr/share/doc2
mv usr/lib usr/lib2
mv usr/lib2 usr/lib
ln etc/config etc/config.link
ln bin/hard1 bin/hard1.more
echo x >> bin/hard2
ln -s ../etc/config bin/cfg
mkfifo run/fifo
mkdir -p new/deep/tree
echo a > new/deep/tree/f
mv new/deep new/deeper
rm -rf deep/a
mkdir deep/a
touch deep/a/again
rm -rf opaque
mkdir opaque
echo o > opaque/file
truncate -s 0 data/big
rm data/small
echo back > data/small
mv data/f1 data/f2
mv data/f2 data/f3
rm data/f3
rm -rf usr/share/doc2
echo t > tmpfile
mv tmpfile tmpfile2
rm tmpfile2
mkdir -p movedir/sub
echo m > movedir/sub/m
mv movedir usr/movedir
rm -rf usr/movedir
rm lower2only
rm whited-in-lower1-dir/keep
rmdir whited-in-lower1-dir
chmod 600 data/keep
chmod 644 data/keep
chmod 600 lib/deep/dir/file
chmod 644 lib/deep/dir/file
setfattr -n user.tmp -v 1 bin/tool2
setfattr -x user.tmp bin/tool2
`

func cvDoActivity(t *testing.T, mnt string) {
	t.Helper()
	if r := run(t, "sh", "-c", cvActivity, "sh", mnt); r.code != 0 {
		t.Fatalf("activity: %s%s", r.stdout, r.stderr)
	}
}

// cvAssertClean runs check on tr and wants exit 0.
func cvAssertClean(t *testing.T, tr *tree) {
	t.Helper()
	r := cvRun(t, tr, "check")
	assert.Equal(t, 0, r.code, "check: %s%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "no problems")
}

// cvVacuumKeepsView vacuums tr and wants the merged view, as mount
// shows it, to be the same before and after, and the result to check
// clean; removes says whether vacuum must find something.
func cvVacuumKeepsView(t *testing.T, tr *tree, removes bool, mount func(), unmount func()) {
	t.Helper()
	mount()
	before := cvView(t, tr.mnt)
	unmount()
	r := cvRun(t, tr, "vacuum")
	assert.Equal(t, 0, r.code, "vacuum: %s%s", r.stdout, r.stderr)
	assert.Equal(t, removes, !strings.Contains(r.stdout, "removed 0 files and 0 directories"), r.stdout)
	mount()
	assert.Equal(t, before, cvView(t, tr.mnt), "vacuum changed the merged view")
	unmount()
	cvAssertClean(t, tr)
}

// Uppers written by kernel overlay in its main configurations, by
// kernel overlay in a user namespace (userxattr), and by layerfs, after
// a busy session, check clean: no false alarms. Vacuum then keeps the
// merged view the same.
func TestCheckUppersWrittenByUnionsAreClean(t *testing.T) {
	needRoot(t)
	needCmd(t, "setfattr")
	for _, cfg := range []string{"", "redirect_dir=on", "index=on", "redirect_dir=on,index=on", "metacopy=on,redirect_dir=on", "index=on,nfs_export=on"} {
		t.Run("kernel "+strings.ReplaceAll(cfg, ",", "+"), func(t *testing.T) {
			tr := newTree(t, 2)
			cvFillLowers(t, tr)
			o := tr.opts()
			if cfg != "" {
				o += "," + cfg
			}
			mount := func() {
				cleanupMount(t, tr.mnt)
				if r := run(t, "mount", "-t", "overlay", "overlay", "-o", o, tr.mnt); r.code != 0 {
					t.Fatalf("kernel overlay %s: %s", cfg, r.stderr)
				}
			}
			mount()
			cvDoActivity(t, tr.mnt)
			unmountAny(t, tr.mnt)
			cvAssertClean(t, tr)
			// With nfs_export every copy is also linked from the index
			// (two links): vacuum keeps them. Metacopy files whose
			// metadata went back to the lower's go like full copies.
			removes := !strings.Contains(cfg, "nfs_export")
			cvVacuumKeepsView(t, tr, removes, mount, func() { unmountAny(t, tr.mnt) })
		})
	}
	t.Run("kernel userxattr in a user namespace", func(t *testing.T) {
		needCmd(t, "unshare")
		tr := newTree(t, 2)
		cvFillLowers(t, tr)
		r := run(t, "unshare", "--user", "--map-root-user", "--mount", "sh", "-ec",
			`mount -t overlay overlay -o "$1,userxattr" "$2"; sh -c "$3" sh "$2"; umount "$2"`, "sh", tr.opts(), tr.mnt, cvActivity)
		req.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
		req.Contains(t, xattrList(filepath.Join(tr.upper, "opaque"), true), "user.overlay.opaque=y", "the session did not write userxattr markers")
		cvAssertClean(t, tr)
	})
	for _, extra := range [][]string{nil, {"-o", "userxattr"}} {
		t.Run(fmt.Sprintf("layerfs %v", extra), func(t *testing.T) {
			tr := newTree(t, 2)
			cvFillLowers(t, tr)
			tr.mount(t, extra...)
			cvDoActivity(t, tr.mnt)
			tr.unmount(t)
			cvAssertClean(t, tr)
			cvVacuumKeepsView(t, tr, true, func() { tr.mount(t, extra...) }, func() { tr.unmount(t) })
		})
	}
}

// Damage made by hand in the upper and work dirs: check reports it (4),
// --repair fixes it (1), a second check is clean (0); the merged view
// through layerfs is the same before and after, kernel overlay then shows
// the same, and the lowers are untouched.
func TestCheckRepairKeepsMergedView(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 2)
	l1, l2, up := tr.lowers[0], tr.lowers[1], tr.upper
	writeFile(t, filepath.Join(l1, "dup"), "dup")
	writeFile(t, filepath.Join(l1, "c"), "lower c")
	writeFile(t, filepath.Join(l2, "orig"), "orig")
	writeFile(t, filepath.Join(l2, "od/x"), "x")
	req.NoError(t, unix.Mknod(filepath.Join(up, "ghost"), unix.S_IFCHR, 0))
	writeFile(t, filepath.Join(up, ".wh.ghost2"), "")
	req.NoError(t, unix.Mknod(filepath.Join(up, "dup"), unix.S_IFCHR, 0))
	writeFile(t, filepath.Join(up, ".wh.dup"), "")
	writeFile(t, filepath.Join(up, "c"), "upper c")
	writeFile(t, filepath.Join(up, ".wh.c"), "")
	writeFile(t, filepath.Join(up, "orig"), "copied")
	req.NoError(t, unix.Setxattr(filepath.Join(up, "orig"), "trusted.overlay.origin", []byte("/l2/orig as text"), 0))
	req.NoError(t, os.Mkdir(filepath.Join(up, "od"), 0o755))
	req.NoError(t, unix.Setxattr(filepath.Join(up, "od"), "trusted.overlay.opaque", []byte("n"), 0))
	writeFile(t, filepath.Join(up, "rf"), "file")
	req.NoError(t, unix.Setxattr(filepath.Join(up, "rf"), "trusted.overlay.redirect", []byte("/elsewhere"), 0))

	tr.mount(t)
	before := cvView(t, tr.mnt)
	tr.unmount(t)
	// A mount empties the work dir: leave the crash debris after it.
	writeFile(t, filepath.Join(tr.work, "work/#lfs9"), "half a copy")
	writeFile(t, filepath.Join(tr.work, "work/#77/x"), "a kernel temp dir")
	lowers := cvSnapshotLowers(t, tr)

	r := cvRun(t, tr, "check")
	assert.Equal(t, 4, r.code, "%s%s", r.stdout, r.stderr)
	assert.Equal(t, 9, strings.Count(r.stdout, "--repair fixes it"), r.stdout)
	r = cvRun(t, tr, "check", "--repair")
	assert.Equal(t, 1, r.code, "%s%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "9 problems, 9 fixed, 0 left")
	cvAssertClean(t, tr)
	assert.Equal(t, lowers, cvSnapshotLowers(t, tr), "repair touched a lower")

	tr.mount(t)
	after := cvView(t, tr.mnt)
	tr.unmount(t)
	assert.Equal(t, before, after, "repair changed the merged view")
	kernelMount(t, tr, false)
	assert.Equal(t, after, cvView(t, tr.mnt), "kernel overlay shows the repaired upper differently")
	unmountAny(t, tr.mnt)
}

// A redirect that leads nowhere, on a directory whose own name has a
// directory below: --repair makes it opaque, and kernel overlay (which
// follows redirects) shows the same before and after.
func TestCheckRepairDanglingRedirect(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 2)
	writeFile(t, filepath.Join(tr.lowers[1], "gone/lowerfile"), "l")
	writeFile(t, filepath.Join(tr.upper, "gone/upperfile"), "u")
	req.NoError(t, unix.Setxattr(filepath.Join(tr.upper, "gone"), "trusted.overlay.redirect", []byte("/nowhere/at/all"), 0))
	req.NoError(t, unix.Mknod(filepath.Join(tr.upper, "ghost"), unix.S_IFCHR, 0))
	mount := func() {
		cleanupMount(t, tr.mnt)
		if r := run(t, "mount", "-t", "overlay", "overlay", "-o", tr.opts()+",redirect_dir=on", tr.mnt); r.code != 0 {
			t.Fatalf("kernel overlay: %s", r.stderr)
		}
	}
	mount()
	before := cvView(t, tr.mnt)
	unmountAny(t, tr.mnt)
	assert.NotContains(t, before, "lowerfile")
	lowers := cvSnapshotLowers(t, tr)

	r := cvRun(t, tr, "check")
	assert.Equal(t, 4, r.code, "%s%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "leads to no directory")
	r = cvRun(t, tr, "check", "--repair")
	assert.Equal(t, 1, r.code, "%s%s", r.stdout, r.stderr)
	cvAssertClean(t, tr)
	assert.Equal(t, lowers, cvSnapshotLowers(t, tr))
	mount()
	assert.Equal(t, before, cvView(t, tr.mnt))
	unmountAny(t, tr.mnt)
}

// A volatile mount's marker is reported and kept by --repair; --force
// removes it.
func TestCheckVolatileMarker(t *testing.T) {
	needRoot(t)
	tr := newTree(t, 1)
	writeFile(t, filepath.Join(tr.lowers[0], "f"), "f")
	cvKernelMountOpts(t, tr, "volatile")
	writeFile(t, filepath.Join(tr.mnt, "new"), "new")
	unmountAny(t, tr.mnt)
	r := cvRun(t, tr, "check", "--repair")
	assert.Equal(t, 4, r.code, "%s%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "a volatile mount did not end cleanly")
	r = cvRun(t, tr, "check", "--repair", "--force")
	assert.Equal(t, 1, r.code, "%s%s", r.stdout, r.stderr)
	cvAssertClean(t, tr)
}

func cvKernelMountOpts(t *testing.T, tr *tree, extra string) {
	t.Helper()
	cleanupMount(t, tr.mnt)
	if r := run(t, "mount", "-t", "overlay", "overlay", "-o", tr.opts()+","+extra, tr.mnt); r.code != 0 {
		t.Fatalf("kernel overlay: %s", r.stderr)
	}
}

// check --repair and vacuum refuse, in one line and with exit 8, while a
// kernel overlay mount or a layerfs server uses the dirs; read-only runs
// go on with a warning.
func TestCheckVacuumRefuseWhileMounted(t *testing.T) {
	needRoot(t)
	for _, drv := range []driver{{"kernel", kernelMount}, {"layerfs", layerfsMount}} {
		t.Run(drv.name, func(t *testing.T) {
			tr := newTree(t, 1)
			writeFile(t, filepath.Join(tr.lowers[0], "f"), "f")
			writeFile(t, filepath.Join(tr.upper, "useless/.wh.ghost"), "")
			cvCpA(t, filepath.Join(tr.lowers[0], "f"), filepath.Join(tr.upper, "f"))
			drv.mount(t, tr, false)
			upper := cvSnapshot(t, tr.upper)
			for _, args := range [][]string{{"check", "--repair"}, {"vacuum"}} {
				r := cvRun(t, tr, args[0], args[1:]...)
				assert.Equal(t, 8, r.code, "%v: %s%s", args, r.stdout, r.stderr)
				assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: want one line: %s", args, r.stderr)
				assert.Contains(t, r.stderr, "in use by", args)
			}
			r := cvRun(t, tr, "check")
			assert.Equal(t, 4, r.code, "%s%s", r.stdout, r.stderr)
			assert.Contains(t, r.stderr, "warning: the union is in use")
			r = cvRun(t, tr, "vacuum", "--dry-run")
			assert.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
			assert.Contains(t, r.stderr, "warning: the union is in use")
			assert.Equal(t, upper, cvSnapshot(t, tr.upper), "a refused run changed the upper")
			unmountAny(t, tr.mnt)
		})
	}
}

func cvCpA(t *testing.T, src, dst string) {
	t.Helper()
	req.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
}

// vacuum removes what is identical to the lowers (cp -a copies, and
// files copied up by a chmod then chmod back, through kernel overlay and
// through layerfs), keeps copies that differ in one attribute each, and
// the merged view is the same before and after through both drivers.
func TestVacuumKeepsMergedView(t *testing.T) {
	needRoot(t)
	needCmd(t, "setfattr")
	tr := newTree(t, 2)
	l1, l2, up := tr.lowers[0], tr.lowers[1], tr.upper
	old := time.Date(2015, 5, 6, 7, 8, 9, 10, time.UTC)
	for _, p := range []string{"etc/same", "etc/content", "etc/mode", "etc/uid", "etc/xattr", "etc/mtime", "kdir/sub/f", "lfile"} {
		writeFile(t, filepath.Join(l2, p), "lower "+p)
	}
	writeFile(t, filepath.Join(l1, "etc/top"), "top")
	req.NoError(t, os.Symlink("target", filepath.Join(l2, "etc/link")))
	filepath.Walk(l2, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != l2 {
			unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW)
		}
		return nil
	})

	// Copy-ups that change nothing in the end, through both drivers.
	kernelMount(t, tr, false)
	req.NoError(t, os.Chmod(filepath.Join(tr.mnt, "kdir/sub/f"), 0o600))
	req.NoError(t, os.Chmod(filepath.Join(tr.mnt, "kdir/sub/f"), 0o644))
	unmountAny(t, tr.mnt)
	tr.mount(t)
	req.NoError(t, os.Chmod(filepath.Join(tr.mnt, "lfile"), 0o600))
	req.NoError(t, os.Chmod(filepath.Join(tr.mnt, "lfile"), 0o644))
	tr.unmount(t)

	// cp -a copies: identical ones, and ones made to differ in one way.
	cvCpA(t, filepath.Join(l2, "etc"), filepath.Join(up, "etc"))
	cvCpA(t, filepath.Join(l1, "etc/top"), filepath.Join(up, "etc/top"))
	etcTimes := filepath.Join(l2, "etc")
	must := func(err error) {
		t.Helper()
		req.NoError(t, err)
	}
	must(os.WriteFile(filepath.Join(up, "etc/content"), []byte("LOWER etc/content"), 0o644))
	must(os.Chmod(filepath.Join(up, "etc/mode"), 0o640))
	must(os.Lchown(filepath.Join(up, "etc/uid"), 4321, 0))
	must(unix.Setxattr(filepath.Join(up, "etc/xattr"), "user.tag", []byte("v"), 0))
	for _, p := range []string{"etc/content", "etc/uid"} {
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(up, p), []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}, 0))
	}
	must(os.Chtimes(filepath.Join(up, "etc/mtime"), old, old.Add(time.Microsecond)))
	var st unix.Stat_t
	must(unix.Lstat(etcTimes, &st))
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(up, "etc"), []unix.Timespec{st.Atim, st.Mtim}, 0))

	views := map[string]string{}
	for _, drv := range []driver{{"kernel", kernelMount}, {"layerfs", layerfsMount}} {
		drv.mount(t, tr, false)
		views[drv.name] = cvView(t, tr.mnt)
		unmountAny(t, tr.mnt)
	}
	lowers := cvSnapshotLowers(t, tr)
	upperBefore := cvSnapshot(t, up)

	r := cvRun(t, tr, "vacuum", "--dry-run")
	req.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
	assert.Equal(t, upperBefore, cvSnapshot(t, up), "a dry run changed the upper")
	wouldGo := strings.Count(r.stdout, "would remove /")

	r = cvRun(t, tr, "vacuum", "-v")
	req.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
	assert.Contains(t, r.stdout, "removed 5 files and 2 directories", r.stdout)
	assert.Equal(t, wouldGo, strings.Count(r.stdout, "removed /"), "the dry run listed something else:\n%s", r.stdout)
	var left []string
	filepath.Walk(up, func(p string, fi os.FileInfo, err error) error {
		if rel, _ := filepath.Rel(up, p); err == nil && rel != "." {
			left = append(left, rel)
		}
		return nil
	})
	assert.Equal(t, []string{"etc", "etc/content", "etc/mode", "etc/mtime", "etc/uid", "etc/xattr"}, left)
	assert.Equal(t, lowers, cvSnapshotLowers(t, tr), "vacuum touched a lower")

	for _, drv := range []driver{{"kernel", kernelMount}, {"layerfs", layerfsMount}} {
		drv.mount(t, tr, false)
		assert.Equal(t, views[drv.name], cvView(t, tr.mnt), "vacuum changed the merged view through %s", drv.name)
		unmountAny(t, tr.mnt)
	}
	cvAssertClean(t, tr)
}

// Usage errors are one line and exit 16; --help shows examples and
// exits 0; a missing layer is an operational error (8).
func TestCheckVacuumUsage(t *testing.T) {
	for _, args := range [][]string{
		{"check"}, {"check", "--bogus"}, {"check", "-o", "lowerdir=/a", "extra"}, {"check", "--force", "-o", "lowerdir=/a"}, {"check", "--upper", "/u"},
		{"vacuum"}, {"vacuum", "-o", "lowerdir=/a"}, {"vacuum", "--repair", "-o", "lowerdir=/a,upperdir=/b"},
	} {
		r := run(t, binary, args...)
		assert.Equal(t, 16, r.code, "%v", args)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%v: want one line: %q", args, r.stderr)
		assert.Empty(t, r.stdout, "%v", args)
	}
	for _, tool := range []string{"check", "vacuum"} {
		r := run(t, binary, tool, "--help")
		assert.Equal(t, 0, r.code)
		assert.Contains(t, r.stdout, "Examples:")
		assert.Contains(t, r.stdout, "layerfs "+tool+" ")
		missing := filepath.Join(t.TempDir(), "missing")
		r = run(t, binary, tool, "-o", "lowerdir="+missing+",upperdir="+missing)
		assert.Equal(t, 8, r.code, "%s: %s", tool, r.stderr)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "%q", r.stderr)
	}
}
