package unionfs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Server is a mounted union.
type Server struct {
	fuse       *fuse.Server
	u          *union
	Mountpoint string
	closeOnce  sync.Once
}

// Validate checks opts as Mount would, without mounting or changing
// anything. Its errors satisfy IsConfigError.
func Validate(opts Options) error {
	_, err := opts.validate()
	return err
}

// Mount validates opts, mounts the union and serves it until it is
// unmounted. The returned Server is live: the mount point shows the union.
func Mount(ctx context.Context, opts Options) (*Server, error) {
	l, err := opts.validate()
	if err != nil {
		return nil, err
	}
	u, err := openLayers(l, &opts)
	if err != nil {
		return nil, err
	}
	// Modes from the kernel are already masked by the caller's umask (or
	// left to us, see rawFS); ours must not mask them again.
	syscall.Umask(0)

	root := &node{u: u, dir: true}
	dirs := u.stack.RootDirs()
	root.h.Store(&home{dirs: dirs})
	// The root reports its top layer's inode number, as the kernel does.
	var rst unix.Stat_t
	if err := unix.Fstat(dirs[0].Fd, &rst); err != nil {
		u.close()
		return nil, err
	}
	fsopts := u.fuseOptions(&opts, u.ino(dirs[0].Layer, rst.Ino))
	raw := rawFS{RawFileSystem: fs.NewNodeFS(root, fsopts), reqs: &u.stats.requests, dirs: &dirReads{}}
	srv, err := newServer(raw, l.mountpoint, &fsopts.MountOptions)
	if err == nil {
		go srv.Serve()
		err = srv.WaitMount()
	}
	if err != nil {
		u.close()
		return nil, fmt.Errorf("mounting %s: %w", l.mountpoint, err)
	}
	return &Server{fuse: srv, u: u, Mountpoint: l.mountpoint}, nil
}

// fuseOptions are the node tree's and the FUSE connection's options for a
// mount of u with opts, whose root reports inode number rootIno.
func (u *union) fuseOptions(opts *Options, rootIno uint64) *fs.Options {
	// We are the only writer of the upper layer and lowers do not change
	// under a mount (as with kernel overlay), so the kernel may cache
	// entries and attributes for long; every change made through the
	// mount updates the kernel's caches itself.
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = time.Hour
	}
	u.attrTimeout = timeout
	u.acl = !opts.NoACL
	caps := uint64(fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_NO_OPENDIR_SUPPORT)
	if u.acl {
		// The kernel then leaves the umask to us: a default ACL
		// decides instead of it (see rawFS).
		caps |= fuse.CAP_DONT_MASK
	}
	mo := fuse.MountOptions{
		FsName:     "layerfs",
		Name:       "layerfs",
		Options:    []string{"default_permissions"},
		AllowOther: OthersMayEnter(*opts),
		// Permission checks with ACLs, by the kernel.
		EnableAcl:     u.acl,
		DirectMount:   true,
		Debug:         opts.Debug,
		MaxBackground: 64,
		// Large writes and readdirplus only where it pays (the kernel
		// decides per directory).
		MaxWrite:             fuse.MAX_KERNEL_WRITE,
		ExtraCapabilities:    caps,
		EnableSymlinkCaching: true,
	}
	if os.Geteuid() == 0 {
		// mount(2) takes noatime as a flag; as root (also mapped root in
		// a user namespace) the union may carry setuid files and device
		// nodes, as a container root filesystem needs, unless asked not.
		mo.DirectMountFlags = unix.MS_NOATIME
	} else {
		mo.Options = append(mo.Options, "noatime")
	}
	mo.Options = append(mo.Options, opts.MountFlags...)
	if !u.writable() {
		mo.Options = append(mo.Options, "ro")
	}
	return &fs.Options{
		// A mode of 0 is a mode like any other.
		NullPermissions: true,
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		RootStableAttr:  &fs.StableAttr{Ino: rootIno},
		MountOptions:    mo,
	}
}

// Unmount detaches the mount; Wait then returns.
func (s *Server) Unmount() error {
	err := s.fuse.Unmount()
	if err != nil {
		// Busy: detach lazily so the server can still end.
		if uerr := unix.Unmount(s.Mountpoint, unix.MNT_DETACH); uerr == nil {
			err = nil
		} else if os.Geteuid() != 0 {
			if exec.Command("fusermount3", "-u", "-z", s.Mountpoint).Run() == nil {
				err = nil
			}
		}
	}
	return err
}

// Wait blocks until the mount is gone and releases the layers.
func (s *Server) Wait() {
	s.fuse.Wait()
	s.closeOnce.Do(func() {
		s.u.endVolatile()
		s.u.close()
	})
}

// newServer mounts and returns the FUSE server. go-fuse opens /dev/fuse
// without O_CLOEXEC and marks it close-on-exec only after the mount: a
// process this one starts meanwhile (a program using the package, a
// test) would inherit the connection and keep it alive after the server
// ends, so that the mount hangs instead of failing. Where the mount is
// made directly (root, also mapped root), it is made under
// syscall.ForkLock, which every fork takes; fusermount3, which a plain
// user's mount runs, must fork, so that path keeps the window.
func newServer(raw fuse.RawFileSystem, mountpoint string, mo *fuse.MountOptions) (*fuse.Server, error) {
	if os.Geteuid() != 0 {
		return fuse.NewServer(raw, mountpoint, mo)
	}
	mo.DirectMountStrict = true // no fallback to fusermount3 under the lock
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	return fuse.NewServer(raw, mountpoint, mo)
}
