package unionfs

import (
	"os"
	"syscall"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixExcluded lists posixtest cases layerfs does not run, with the
// reason. Keep it empty unless a case tests something a union cannot do.
var posixExcluded = map[string]string{
	"FcntlFlockLocksFile": "expects a second fd of the same process to conflict with the first one's " +
		"fcntl lock (per-handle OFD semantics); layerfs leaves POSIX locks to the kernel, like kernel " +
		"overlay, where a process may re-lock its own file (TestKernelOverlayLockSemantics shows the kernel's result)",
}

func runPosix(t *testing.T, opts Options, fill func(lowers []string, upper string)) {
	for k, why := range posixExcluded {
		t.Logf("excluded %s: %s", k, why)
	}
	for _, k := range sortedPosixKeys() {
		t.Run(k, func(t *testing.T) {
			tu := newTestUnionOpts(t, 1, opts, fill)
			posixtest.All[k](t, tu.mnt)
		})
	}
}

func TestPosixEmptyLower(t *testing.T) {
	runPosix(t, Options{}, nil)
}

// With open handles and FUSE passthrough (root).
func TestPosixPassthrough(t *testing.T) {
	runPosix(t, Options{Passthrough: true}, nil)
}

// A populated lower: the suite runs in "suite", a directory that exists
// only in the lowers and looks empty because every entry in it is whited
// out (in both forms), so each create copies the directory up first and
// every listing must hide the markers.
func TestPosixPopulatedLower(t *testing.T) {
	keys := sortedPosixKeys()
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			tu := newTestUnion(t, 2, func(lowers []string, upper string) {
				writeFile(t, filepath.Join(lowers[1], "suite", "hidden_oci"), "x")
				writeFile(t, filepath.Join(lowers[1], "suite", "hidden_char"), "x")
				writeFile(t, filepath.Join(lowers[1], "suite", "sub", "deep"), "x")
				writeFile(t, filepath.Join(lowers[0], "suite", ".wh.hidden_oci"), "")
				mkCharWhiteout(t, filepath.Join(lowers[0], "suite", "hidden_char"))
				writeFile(t, filepath.Join(lowers[0], "suite", ".wh.sub"), "")
				writeFile(t, filepath.Join(lowers[0], "beside"), "lower")
			})
			posixtest.All[k](t, tu.m("suite"))
		})
	}
}

func sortedPosixKeys() []string {
	var keys []string
	for k := range posixtest.All {
		if _, ok := posixExcluded[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// TestKernelOverlayLockSemantics runs the scenario of the excluded
// FcntlFlockLocksFile case on kernel overlay and on layerfs: both let the
// same process take the second lock.
func TestKernelOverlayLockSemantics(t *testing.T) {
	tu := newTestUnion(t, 1, nil)
	kdir := t.TempDir()
	for _, d := range []string{"l", "u", "w", "m"} {
		must(t, os.Mkdir(filepath.Join(kdir, d), 0o755))
	}
	must(t, unix.Mount("overlay", filepath.Join(kdir, "m"), "overlay", 0,
		"lowerdir="+kdir+"/l,upperdir="+kdir+"/u,workdir="+kdir+"/w"))
	defer unix.Unmount(filepath.Join(kdir, "m"), unix.MNT_DETACH)
	for _, mnt := range []string{filepath.Join(kdir, "m"), tu.mnt} {
		f1, err := os.Create(mnt + "/test")
		must(t, err)
		defer f1.Close()
		must(t, syscall.FcntlFlock(f1.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_WRLCK}))
		f2, err := os.OpenFile(mnt+"/test", os.O_RDWR, 0)
		must(t, err)
		defer f2.Close()
		assert.NoError(t, syscall.FcntlFlock(f2.Fd(), syscall.F_SETLK, &syscall.Flock_t{Type: syscall.F_RDLCK}), mnt)
	}
}
