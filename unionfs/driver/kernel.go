package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/layerfs/layerfs/unionfs"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Kernel overlay as a driver: where the kernel can serve a union as asked,
// layerfs mounts it and gets out of the way.

// dirs validates the layers and mount point of opts as unionfs.Mount
// does, and returns them resolved.
func dirs(opts unionfs.Options) (layout.Layers, string, error) {
	return layout.ValidateMount(layout.Layers{Lowers: opts.Lowers, Upper: opts.Upper, Work: opts.Work}, opts.Mountpoint)
}

// NeedsFUSE returns why opts can only be served by layerfs itself, or ""
// when kernel overlay can serve them: options the kernel lacks, and
// markers in the layers that the kernel would not read (OCI ".wh." files,
// opaque xattrs of another namespace).
func NeedsFUSE(opts unionfs.Options, userxattr bool) string {
	switch {
	case len(opts.UIDMap) > 0 || len(opts.GIDMap) > 0:
		return "uid/gid mapping"
	case opts.SquashUID != nil || opts.SquashGID != nil:
		return "ownership squashing"
	case opts.Passthrough:
		return "passthrough"
	case opts.NoSync && !opts.Volatile:
		return "fsync=0"
	case opts.Timeout != 0:
		return "timeout"
	case opts.Private:
		return "private (kernel overlay serves every user)"
	case opts.NoACL:
		return "noacl"
	case opts.Debug:
		return "debug log"
	}
	l, _, err := dirs(opts)
	if err != nil {
		return err.Error()
	}
	layers := append([]string{}, l.Lowers...)
	if l.Upper != "" {
		layers = append(layers, l.Upper)
	}
	for _, d := range layers {
		if why := foreignMarkers(d, userxattr); why != "" {
			return why
		}
	}
	return ""
}

// foreignMarkers walks a layer (names and directory xattrs only) for
// markers the kernel would not honour.
func foreignMarkers(root string, userxattr bool) string {
	// Markers of the other namespace are ignored by the kernel; with
	// userxattr it follows no redirect at all (redirect_dir=nofollow).
	foreign := []string{whiteout.User.Name(whiteout.Opaque), whiteout.User.Name(whiteout.Redirect), whiteout.FuseOverlayfs.Name(whiteout.Opaque)}
	if userxattr {
		foreign = []string{whiteout.Trusted.Name(whiteout.Opaque), whiteout.Trusted.Name(whiteout.Redirect), whiteout.User.Name(whiteout.Redirect), whiteout.FuseOverlayfs.Name(whiteout.Opaque)}
	}
	var found string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), whiteout.Prefix) && p != root {
			found = "OCI whiteout " + p
			return filepath.SkipAll
		}
		if d.IsDir() {
			for _, attr := range foreign {
				if n, err := unix.Lgetxattr(p, attr, nil); err == nil && n > 0 {
					found = attr + " on " + p
					return filepath.SkipAll
				}
			}
		}
		return nil
	})
	return found
}

// MountKernel mounts opts with kernel overlayfs, through the new mount API
// (one fsconfig call per lower layer, so long stacks have no option-string
// limit), falling back to mount(2).
func MountKernel(opts unionfs.Options, userxattr bool) error {
	l, mnt, err := dirs(opts)
	if err != nil {
		return err
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return mountKernelLegacy(l, mnt, opts, userxattr)
	}
	if err != nil {
		return fmt.Errorf("kernel overlay: %w", err)
	}
	defer unix.Close(fd)
	fail := func(step string, err error) error {
		if msg := fsLog(fd); msg != "" {
			return fmt.Errorf("kernel overlay: %s", msg)
		}
		return fmt.Errorf("kernel overlay: %s: %w", step, err)
	}
	perLayer := true
	for _, low := range l.Lowers {
		if err := unix.FsconfigSetString(fd, "lowerdir+", low); err != nil {
			if len(l.Lowers) > 0 && low == l.Lowers[0] && errors.Is(err, unix.EINVAL) {
				perLayer = false // kernel before 6.8
				fsLog(fd)
				break
			}
			return fail("lowerdir+ "+low, err)
		}
	}
	if !perLayer {
		esc := make([]string, len(l.Lowers))
		for i, low := range l.Lowers {
			esc[i] = strings.ReplaceAll(low, ":", `\:`)
		}
		if err := unix.FsconfigSetString(fd, "lowerdir", strings.Join(esc, ":")); err != nil {
			return fail("lowerdir", err)
		}
	}
	if l.Upper != "" {
		if err := unix.FsconfigSetString(fd, "upperdir", l.Upper); err != nil {
			return fail("upperdir", err)
		}
		if err := unix.FsconfigSetString(fd, "workdir", l.Work); err != nil {
			return fail("workdir", err)
		}
	}
	var flags []string
	if userxattr {
		flags = append(flags, "userxattr")
	} else {
		// The features layerfs uses in the trusted format, so that
		// both drivers read and write the same upper. An upper with
		// metacopy files needs a kernel that reads them.
		for _, f := range kernelFeatures(opts) {
			k, v, _ := strings.Cut(f, "=")
			if err := unix.FsconfigSetString(fd, k, v); err != nil {
				return fail(f, err)
			}
		}
	}
	if opts.Volatile {
		flags = append(flags, "volatile")
	}
	for _, f := range flags {
		if err := unix.FsconfigSetFlag(fd, f); err != nil {
			return fail(f, err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("create", err)
	}
	attr := 0
	if opts.ReadOnly {
		attr |= unix.MOUNT_ATTR_RDONLY
	}
	for _, f := range opts.MountFlags {
		switch f {
		case "nosuid":
			attr |= unix.MOUNT_ATTR_NOSUID
		case "nodev":
			attr |= unix.MOUNT_ATTR_NODEV
		case "noexec":
			attr |= unix.MOUNT_ATTR_NOEXEC
		}
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fail("move_mount", err)
	}
	return nil
}

// fsLog drains the messages the kernel left on an fs context.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimPrefix(strings.TrimSpace(string(buf[:n])), "e "))
	}
	return strings.Join(msgs, "; ")
}

func mountKernelLegacy(l layout.Layers, mnt string, opts unionfs.Options, userxattr bool) error {
	esc := make([]string, len(l.Lowers))
	for i, low := range l.Lowers {
		esc[i] = strings.NewReplacer(":", `\:`, ",", `\,`).Replace(low)
	}
	data := "lowerdir=" + strings.Join(esc, ":")
	if l.Upper != "" {
		data += ",upperdir=" + l.Upper + ",workdir=" + l.Work
	}
	if userxattr {
		data += ",userxattr"
	}
	for _, f := range kernelFeatures(opts) {
		if !userxattr {
			data += "," + f
		}
	}
	if opts.Volatile {
		data += ",volatile"
	}
	var flags uintptr
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("overlay", mnt, "overlay", flags, data); err != nil {
		return fmt.Errorf("kernel overlay: %w", err)
	}
	return nil
}

// kernelFeatures are the kernel overlay options that match layerfs's own
// behaviour for opts (trusted xattr format only: with userxattr the kernel
// allows neither).
func kernelFeatures(opts unionfs.Options) []string {
	if opts.NoFollowRedirect {
		return []string{"redirect_dir=nofollow"}
	}
	if opts.NoRedirectDir {
		return nil // metacopy=on needs redirect_dir=on
	}
	f := []string{"redirect_dir=on"}
	if !opts.NoMetacopy {
		f = append(f, "metacopy=on")
	}
	return f
}
