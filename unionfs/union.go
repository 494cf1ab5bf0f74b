package unionfs

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/layerfs/layerfs/copyup/at"
	lay "github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/merge"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// upperLayer is the index of the writable layer; lowers are 1..n, top first.
const upperLayer = merge.Upper

// union is the layer stack shared by every node of one mount.
type union struct {
	// roots[i] is an O_PATH fd of layer i's root; roots[0] is -1 when the
	// union has no upper layer.
	roots []int
	// stack resolves names across the layers (the one merge rule).
	stack merge.Stack
	// work is an open fd of W/work, where copies and whiteouts are built.
	work int
	// workDir is the fd of W itself, held locked for the mount's life.
	workDir int
	// ns is the xattr namespace our markers are written in.
	ns whiteout.Namespace
	// devIdx[i] distinguishes the filesystem of layer i when the layers
	// span several filesystems; samefs is true when they do not.
	devIdx []uint64
	samefs bool

	readOnly bool
	fsync    bool
	// passthrough: files get open handles the kernel may do I/O on.
	passthrough bool
	// volatile: no syncs, and a marker in the work dir while mounted.
	volatile bool
	// ids translates ownership; nil when no mapping was asked for.
	ids *idMapper
	// chownNew: new entries get the caller's ids (server may chown).
	chownNew bool

	// epochs holds, per reported inode number, a count mixed into the
	// generation of entries that must come back as a new kernel inode
	// (see node.Open with passthrough).
	epochs sync.Map // uint64 -> uint64

	// reads caches descriptors for reading (see fdcache.go).
	reads *readFds

	// held are the descriptors nodes keep (directory fds, fds of
	// nameless files), closed at the end even for nodes the kernel never
	// forgot, so the layers are released when the server ends.
	heldMu sync.Mutex
	held   map[int]struct{}

	// renameMu orders renames against every operation that resolves a
	// node's (parent, name): see doc.go.
	renameMu sync.RWMutex

	// index is an fd of W/index (hard links across copy-up, index.go),
	// or -1; nlinkMu orders the updates of its link count records.
	index   int
	nlinkMu sync.Mutex

	// redirectDir: directories with a lower part rename by redirect.
	// metacopy: metadata changes leave a file's data below. Both write
	// kernel formats; metacopy only as trusted xattrs, the only form a
	// kernel mount reads. (redirect_dir=nofollow and metacopy=off also
	// ignore, or refuse, those records in the layers: see stack.)
	redirectDir, metacopy bool

	// attrTimeout is how long the kernel may cache attributes.
	attrTimeout time.Duration
	// acl: POSIX ACLs are on (the kernel checks them; new entries
	// inherit default ACLs).
	acl bool
	// nameMax is the longest name the union takes (statfs f_namemax).
	nameMax int

	// desc and stats answer StatusXattr (describe.go).
	desc  description
	stats counters
}

func (u *union) writable() bool { return u.roots[upperLayer] >= 0 && !u.readOnly }

// openLayers opens the layer roots and prepares the work dir.
func openLayers(l *layout, o *Options) (*union, error) {
	u := &union{reads: newReadFds(256), work: -1, workDir: -1, index: -1, fsync: !o.NoSync, readOnly: o.ReadOnly, passthrough: o.Passthrough, ids: newIDMapper(o), volatile: o.Volatile && l.upper != "", chownNew: os.Geteuid() == 0, desc: describeOptions(l, o)}
	ok := false
	defer func() {
		if !ok {
			u.close()
		}
	}()
	open := func(p string) (int, error) {
		return unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	u.roots = append(u.roots, -1)
	if l.upper != "" {
		fd, err := open(l.upper)
		if err != nil {
			return nil, fmt.Errorf("upperdir %s: %w", l.upper, err)
		}
		u.roots[0] = fd
	}
	for _, p := range l.lowers {
		fd, err := open(p)
		if err != nil {
			return nil, fmt.Errorf("lowerdir %s: %w", p, err)
		}
		u.roots = append(u.roots, fd)
	}
	var devs []uint64
	u.samefs = true
	for _, fd := range u.roots {
		idx := uint64(0)
		if fd >= 0 {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return nil, err
			}
			idx = uint64(len(devs))
			for i, d := range devs {
				if d == st.Dev {
					idx = uint64(i)
				}
			}
			if idx == uint64(len(devs)) {
				devs = append(devs, st.Dev)
			}
		}
		u.devIdx = append(u.devIdx, idx)
	}
	u.samefs = len(devs) <= 1
	u.stack = merge.Stack{Roots: u.roots, NoFollowRedirect: o.NoFollowRedirect, NoMetacopy: o.NoMetacopy, Hold: u.hold, Release: u.release}
	if l.upper != "" {
		if err := u.prepareWork(l.work); err != nil {
			return nil, err
		}
		u.ns = whiteout.ProbeNamespace(u.work)
		if o.UserXattr {
			u.ns = whiteout.User
		}
		if !o.NoIndex {
			u.openIndex(u.workDir)
		}
		u.redirectDir = !o.NoRedirectDir
		u.metacopy = !o.NoMetacopy && u.ns == whiteout.Trusted
	}
	u.nameMax = u.probeNameMax()
	ok = true
	return u, nil
}

// prepareWork locks W, creates W/work like the kernel does and removes
// whatever a crashed mount left in it.
func (u *union) prepareWork(work string) error {
	fd, err := unix.Open(work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("workdir %s: %w", work, err)
	}
	u.workDir = fd
	if err := lay.LockWork(fd); err != nil {
		return fmt.Errorf("workdir %s is in use by another mount", work)
	}
	if err := unix.Mkdirat(fd, "work", 0o700); err != nil && err != unix.EEXIST {
		return fmt.Errorf("workdir %s: creating work/: %w", work, err)
	}
	openWork := func() (int, error) {
		return unix.Openat(fd, "work", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	w, err := openWork()
	if err == unix.EACCES {
		// The kernel makes work/ with mode 0; only its owner may still
		// use it without privileges.
		if unix.Fchmodat(fd, "work", 0o700, 0) == nil {
			w, err = openWork()
		}
	}
	if err != nil {
		return fmt.Errorf("workdir %s/work: %w", work, err)
	}
	u.work = w
	// A volatile mount leaves work/incompat/volatile until it ends
	// cleanly; finding it means the upper may have lost writes.
	if at.Exists(at.Loc{Dir: w, Name: "incompat/volatile"}) {
		return configErr("workdir %s: a volatile mount of this upper did not end cleanly (%s/work/incompat/volatile exists); its data may be incomplete, remove that directory to mount anyway", work, work)
	}
	ents, err := at.Dirents(w)
	if err != nil {
		return fmt.Errorf("workdir %s/work: %w", work, err)
	}
	for _, e := range ents {
		if err := at.RemoveAll(at.Loc{Dir: w, Name: e.Name}); err != nil {
			return fmt.Errorf("cleaning stale %s/work/%s: %w", work, e.Name, err)
		}
	}
	if u.volatile {
		if err := unix.Mkdirat(w, "incompat", 0o700); err != nil {
			return fmt.Errorf("workdir %s: %w", work, err)
		}
		if err := unix.Mkdirat(w, "incompat/volatile", 0o700); err != nil {
			return fmt.Errorf("workdir %s: %w", work, err)
		}
	}
	return nil
}

// endVolatile runs after a clean unmount: once the upper is synced, the
// volatile marker goes, and the next mount may use the upper.
func (u *union) endVolatile() {
	if !u.volatile || u.roots[upperLayer] < 0 {
		return
	}
	fd, err := unix.Openat(u.roots[upperLayer], ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	err = unix.Syncfs(fd)
	unix.Close(fd)
	if err == nil {
		at.RemoveAll(at.Loc{Dir: u.work, Name: "incompat"})
	}
}

// hold registers a descriptor a node keeps.
func (u *union) hold(fd int) {
	u.heldMu.Lock()
	if u.held == nil {
		u.held = map[int]struct{}{}
	}
	u.held[fd] = struct{}{}
	u.heldMu.Unlock()
}

// release closes a held descriptor, once: after close() it is a no-op.
func (u *union) release(fd int) {
	u.heldMu.Lock()
	_, ok := u.held[fd]
	delete(u.held, fd)
	u.heldMu.Unlock()
	if ok {
		unix.Close(fd)
	}
}

func (u *union) close() {
	u.reads.closeAll()
	u.heldMu.Lock()
	for fd := range u.held {
		unix.Close(fd)
	}
	u.held = nil
	u.heldMu.Unlock()
	for _, fd := range u.roots {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	u.roots = nil
	if u.work >= 0 {
		unix.Close(u.work)
	}
	if u.workDir >= 0 {
		unix.Close(u.workDir)
	}
	if u.index >= 0 {
		unix.Close(u.index)
	}
	u.work, u.workDir, u.index = -1, -1, -1
}

// probeNameMax is the longest name the union can take: the upper
// filesystem's (else the top lower's), and 4 bytes less where a whiteout
// must be a ".wh.NAME" file because the upper refuses the kernel's char
// 0/0 form (which needs no room beside the name).
func (u *union) probeNameMax() int {
	fd := u.roots[upperLayer]
	if fd < 0 {
		fd = u.roots[1]
	}
	n := 255
	var s unix.Statfs_t
	if unix.Fstatfs(fd, &s) == nil && s.Namelen > 0 && s.Namelen < 255 {
		n = int(s.Namelen)
	}
	if u.work < 0 {
		return n // read-only: no whiteouts are written
	}
	if !whiteout.CharWorks(u.work) {
		return n - len(whiteout.Prefix)
	}
	return n
}
