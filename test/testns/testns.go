// Package testns runs a test binary in a mount namespace of its own.
//
// A namespace made by another process (a container engine, an `unshare
// --mount` of another test) copies every mount of the namespace it came
// from: a union a test mounted and then unmounts stays mounted in the
// copy, its FUSE server keeps serving and its layer dirs stay in use, so
// the test's next mount of them fails. In a namespace of its own a test
// binary's unions are copied only by its own children.
package testns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/layerfs/layerfs/unionfs/layout"
	"golang.org/x/sys/unix"
)

const envKey = "LAYERFS_TEST_NS"

// Enter, as root, runs the test binary again in a private mount namespace
// and exits with its status. In that run (or where the namespace cannot
// be made: it says so and goes on) it returns, once the copies of other
// processes' unions the new namespace holds are detached.
func Enter(name string) {
	if os.Getenv(envKey) == "" && os.Geteuid() == 0 {
		cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), envKey+"=1")
		// Go marks / MS_REC|MS_PRIVATE after unsharing CLONE_NEWNS.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			os.Exit(0)
		case errors.As(err, &ee):
			if ee.ExitCode() < 0 {
				os.Exit(2) // killed by a signal
			}
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintf(os.Stderr, "%s: no private mount namespace (%v); running in this one\n", name, err)
		return
	}
	if os.Getenv(envKey) != "" {
		dropForeignMounts()
	}
}

// dropForeignMounts detaches, in this private mount namespace, the copies
// of the unions other processes had mounted when it was made.
func dropForeignMounts() {
	ms, err := layout.ReadMountInfo()
	if err != nil {
		return
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if t := ms[i].FSType; t == "overlay" || strings.HasPrefix(t, "fuse.") {
			unix.Unmount(ms[i].Mountpoint, unix.MNT_DETACH)
		}
	}
}
