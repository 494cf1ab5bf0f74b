// Package driver decides what serves a union mount: kernel overlayfs,
// where the caller may mount it and the kernel can serve the union as
// asked, or layerfs's own FUSE server (package unionfs) otherwise. It
// also mounts kernel overlay (MountKernel).
package driver

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/layerfs/layerfs/unionfs"
)

// Mode is the driver choice asked for (--driver, or driver= in -o).
type Mode string

const (
	// Auto mounts kernel overlay where it can serve the mount, and
	// leaves it to FUSE otherwise.
	Auto Mode = "auto"
	// FUSE always leaves the mount to layerfs's FUSE server.
	FUSE Mode = "fuse"
	// Kernel mounts kernel overlay or fails.
	Kernel Mode = "kernel"
)

// ParseMode reads a driver choice as --driver and driver= take it.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, FUSE, Kernel:
		return m, nil
	}
	return "", fmt.Errorf("--driver=%s: want auto, fuse or kernel", s)
}

// ErrKernelCannotServe is returned (wrapped, with the reason) when Kernel
// is asked for and kernel overlay cannot serve the mount: bad input, as
// opposed to a mount that failed.
var ErrKernelCannotServe = errors.New("kernel overlay cannot serve this mount")

// Choose serves opts with kernel overlay where mode (Auto, FUSE or Kernel)
// allows and the kernel can, and returns Kernel once kernel overlay serves
// the mount; it returns FUSE when the caller is to serve it with
// unionfs.Mount. With Auto, a kernel mount that fails falls back to FUSE;
// with Kernel it is an error, wrapping ErrKernelCannotServe when the
// kernel cannot serve the mount at all. say, if not nil, is told (one
// line each) which driver serves and why kernel overlay does not. opts
// are expected valid (unionfs.Validate).
func Choose(opts unionfs.Options, mode Mode, say func(msg string)) (Mode, error) {
	if say == nil {
		say = func(string) {}
	}
	if mode != FUSE {
		served, err := tryKernel(opts, mode, say)
		if err != nil {
			return "", err
		}
		if served {
			return Kernel, nil
		}
	}
	say("serving the mount with FUSE (layerfs)")
	return FUSE, nil
}

// tryKernel mounts with kernel overlay where it can serve the mount (or
// where mode Kernel insists). served reports that kernel overlay serves
// the mount.
func tryKernel(opts unionfs.Options, mode Mode, say func(string)) (served bool, err error) {
	userxattr := opts.UserXattr || inUserNamespace()
	why := NeedsFUSE(opts, userxattr)
	if why != "" {
		if mode == Kernel {
			return false, fmt.Errorf("--driver=kernel: %w: %s", ErrKernelCannotServe, why)
		}
		say(fmt.Sprintf("kernel overlay cannot serve this mount (%s)", why))
		return false, nil
	}
	err = MountKernel(opts, userxattr)
	if err == nil {
		say("serving the mount with kernel overlay")
		return true, nil
	}
	if mode == Kernel {
		return false, err
	}
	say(fmt.Sprintf("%v; using FUSE", err))
	return false, nil
}

// inUserNamespace reports whether this process runs in a user namespace
// other than the initial one, where kernel overlay needs userxattr.
func inUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}
