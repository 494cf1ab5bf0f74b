package unionfs

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"
	"sync"
	"time"

	"github.com/layerfs/layerfs/copyup"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// upperLayer is the index of the writable layer; lowers are 1..n, top first.
const upperLayer = 0

// union is the layer stack shared by every node of one mount.
type union struct {
	// roots[i] is an O_PATH fd of layer i's root; roots[0] is -1 when the
	// union has no upper layer.
	roots []int
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
	// kernel mount reads.
	redirectDir, metacopy bool
	// noFollowRedirect, noFollowMetacopy: redirect_dir=nofollow and
	// metacopy=off also ignore, or refuse, those records in the layers.
	noFollowRedirect, noFollowMetacopy bool

	// attrTimeout is how long the kernel may cache attributes.
	attrTimeout time.Duration

	// desc and stats answer StatusXattr (describe.go).
	desc  description
	stats counters
}

func (u *union) writable() bool { return u.roots[upperLayer] >= 0 && !u.readOnly }

// openLayers opens the layer roots and prepares the work dir.
func openLayers(l *layout, o *Options) (*union, error) {
	u := &union{noFollowRedirect: o.NoFollowRedirect, noFollowMetacopy: o.NoMetacopy, reads: newReadFds(256), work: -1, workDir: -1, index: -1, fsync: !o.NoSync, readOnly: o.ReadOnly, passthrough: o.Passthrough, ids: newIDMapper(o), volatile: o.Volatile && l.upper != "", chownNew: os.Geteuid() == 0, desc: describeOptions(l, o)}
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
	if l.upper != "" {
		if err := u.prepareWork(l.work); err != nil {
			return nil, err
		}
		u.ns = whiteout.ProbeNamespace(u.work)
		if o.UserXattr {
			u.ns = whiteout.UserPrefix
		}
		if !o.NoIndex {
			u.openIndex(u.workDir)
		}
		u.redirectDir = !o.NoRedirectDir
		u.metacopy = !o.NoMetacopy && u.ns == whiteout.TrustedPrefix
	}
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
	// A server whose mount was just detached may still be letting go of
	// the work dir: give it a moment.
	for i := 0; ; i++ {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if err != unix.EWOULDBLOCK || i == 40 {
			return fmt.Errorf("workdir %s is in use by another mount", work)
		}
		time.Sleep(50 * time.Millisecond)
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
	var st unix.Stat_t
	if unix.Fstatat(w, "incompat/volatile", &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		return configErr("workdir %s: a volatile mount of this upper did not end cleanly (%s/work/incompat/volatile exists); its data may be incomplete, remove that directory to mount anyway", work, work)
	}
	names, err := copyup.ReadNames(w)
	if err != nil {
		return fmt.Errorf("workdir %s/work: %w", work, err)
	}
	for _, n := range names {
		if err := copyup.RemoveAll(w, n); err != nil {
			return fmt.Errorf("cleaning stale %s/work/%s: %w", work, n, err)
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
		copyup.RemoveAll(u.work, "incompat")
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

// ino composes the st_ino reported for an entry of layer whose real inode
// is real: the real number when all layers share one filesystem, else the
// filesystem's index in the top bits (as kernel overlay's xino does).
func (u *union) ino(layer int, real uint64) uint64 {
	if u.samefs {
		return real
	}
	return real ^ u.devIdx[layer]<<56
}

// Origin records, kernel-compatible, which lower inode an upper entry was
// copied from: struct ovl_fb {version 0, magic 0xfb, len, flags, type,
// uuid[16], fid[]}. The uuid is left null, as the kernel does when all
// layers share a filesystem.
func encodeOrigin(dirfd int, name string) []byte {
	h, _, err := unix.NameToHandleAt(dirfd, name, 0)
	if err != nil {
		return nil
	}
	fid := h.Bytes()
	b := make([]byte, 21+len(fid))
	b[0], b[1], b[2], b[3], b[4] = 0, 0xfb, byte(len(b)), 0, byte(h.Type())
	copy(b[21:], fid)
	return b
}

// decodeOriginIno extracts the inode number from an origin record for the
// file handle types whose layout is known (ext4/xfs FILEID_INO32_GEN,
// FILEID_INO64_GEN, tmpfs).
func decodeOriginIno(b []byte) (uint64, bool) {
	if len(b) < 21 || b[1] != 0xfb || int(b[2]) != len(b) {
		return 0, false
	}
	fid := b[21:]
	switch {
	case (b[4] == 1 || b[4] == 2) && len(fid) == 12: // tmpfs: gen, ino lo, ino hi
		return uint64(binary.LittleEndian.Uint32(fid[4:])) | uint64(binary.LittleEndian.Uint32(fid[8:]))<<32, true
	case b[4] == 1 && len(fid) == 8, b[4] == 2 && len(fid) >= 8: // ino32, gen [, parent]
		return uint64(binary.LittleEndian.Uint32(fid)), true
	case (b[4] == 0x81 || b[4] == 0x82) && len(fid) >= 12: // ino64, gen [, parent]
		return binary.LittleEndian.Uint64(fid), true
	}
	return 0, false
}

// identity returns the inode number and generation an entry is known by
// (go-fuse keys nodes on both): those of the lower file it was copied from
// when it has an origin record, else its own. The generation hashes the
// file handle (inode number and i_generation), so a copy-up keeps the
// identity, across remounts too, while a reused inode number is a new one.
func (u *union) identity(layer, dirfd int, name string, st *unix.Statx_t) (ino, gen uint64) {
	ino, gen = u.baseIdentity(layer, dirfd, name, st)
	if e, ok := u.epochs.Load(ino); ok {
		gen ^= e.(uint64) * 0x9e3779b97f4a7c15
	}
	return ino, gen
}

// supersede makes the next lookup of inode number ino a new kernel inode.
func (u *union) supersede(ino uint64) {
	for {
		old, loaded := u.epochs.LoadOrStore(ino, uint64(1))
		if !loaded || u.epochs.CompareAndSwap(ino, old, old.(uint64)+1) {
			return
		}
	}
}

func (u *union) baseIdentity(layer, dirfd int, name string, st *unix.Statx_t) (ino, gen uint64) {
	ino = st.Ino
	h := fnv.New64a()
	if layer == upperLayer {
		if v, err := copyup.GetXattr(procPath(dirfd, name), u.ns.Name("origin")); err == nil && len(v) > 21 && v[1] == 0xfb {
			if o, ok := decodeOriginIno(v); ok && u.samefs {
				ino = o
			} else if l, o, ok := u.originLayer(v); ok {
				layer, ino = l, o
			}
			h.Write(v[4:5])
			h.Write(v[21:])
			return u.ino(layer, ino), h.Sum64() | 1
		}
	}
	if fh, _, err := unix.NameToHandleAt(dirfd, name, 0); err == nil {
		h.Write([]byte{byte(fh.Type())})
		h.Write(fh.Bytes())
		return u.ino(layer, ino), h.Sum64() | 1
	}
	return u.ino(layer, ino), uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
}

// originLayer finds, where the layers span several filesystems, the lower
// layer and inode an origin record names, so that a copy keeps the number
// it had (layer index in the top bits) across remounts. The file handle
// is opened on each lower filesystem in turn; that needs
// CAP_DAC_READ_SEARCH, without which the copy reports its own number.
func (u *union) originLayer(v []byte) (layer int, ino uint64, ok bool) {
	h := unix.NewFileHandle(int32(v[4]), v[21:])
	tried := map[uint64]bool{}
	for i := upperLayer + 1; i < len(u.roots); i++ {
		if tried[u.devIdx[i]] {
			continue
		}
		tried[u.devIdx[i]] = true
		// open_by_handle_at takes no O_PATH descriptor for the mount.
		mfd, err := unix.Open(procPath(u.roots[i], ""), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		fd, err := unix.OpenByHandleAt(mfd, h, unix.O_PATH|unix.O_CLOEXEC)
		unix.Close(mfd)
		if err != nil {
			continue
		}
		var st, rst unix.Stat_t
		err = unix.Fstat(fd, &st)
		unix.Close(fd)
		if err == nil && unix.Fstat(u.roots[i], &rst) == nil && st.Dev == rst.Dev {
			return i, st.Ino, true
		}
	}
	return 0, 0, false
}

// originIno is the st_ino an upper entry with an origin record reports:
// its origin's, composed with the origin's layer where the layers span
// several filesystems.
func (u *union) originIno(dirfd int, name string) (uint64, bool) {
	p := procPath(dirfd, name)
	v, err := copyup.GetXattr(p, u.ns.Name("origin"))
	if err != nil {
		return 0, false
	}
	if u.samefs {
		return decodeOriginIno(v)
	}
	if len(v) > 21 && v[1] == 0xfb {
		if l, o, ok := u.originLayer(v); ok {
			return u.ino(l, o), true
		}
	}
	return 0, false
}

func procPath(dirfd int, name string) string {
	p := fmt.Sprintf("/proc/self/fd/%d", dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}
