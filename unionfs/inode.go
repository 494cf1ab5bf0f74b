package unionfs

import (
	"hash/fnv"

	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Inode numbers and identities: what st_ino an entry reports, and which
// kernel inode (go-fuse node) it is.

// ino composes the st_ino reported for an entry of layer whose real inode
// is real: the real number when all layers share one filesystem, else the
// filesystem's index in the top bits (as kernel overlay's xino does).
func (u *union) ino(layer int, real uint64) uint64 {
	if u.samefs {
		return real
	}
	return real ^ u.devIdx[layer]<<56
}

// identity returns the inode number and generation an entry is known by
// (go-fuse keys nodes on both): those of the lower file it was copied from
// when it has an origin record, else its own. The generation hashes the
// file handle (inode number and i_generation), so a copy-up keeps the
// identity, across remounts too, while a reused inode number is a new one.
func (u *union) identity(layer int, l at.Loc, st *unix.Statx_t) (ino, gen uint64) {
	ino, gen = u.baseIdentity(layer, l, st)
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

func (u *union) baseIdentity(layer int, l at.Loc, st *unix.Statx_t) (ino, gen uint64) {
	ino = st.Ino
	h := fnv.New64a()
	if layer == upperLayer {
		v, err := at.GetXattr(l, u.ns.Name(whiteout.Origin))
		if fh, ok := whiteout.OriginHandle(v); err == nil && ok {
			if o, ok := whiteout.DecodeOriginIno(v); ok && u.samefs {
				ino = o
			} else if ol, o, ok := u.originLayer(fh); ok {
				layer, ino = ol, o
			}
			h.Write([]byte{byte(fh.Type())})
			h.Write(fh.Bytes())
			return u.ino(layer, ino), h.Sum64() | 1
		}
	}
	if fh, _, err := unix.NameToHandleAt(l.Dir, l.Name, 0); err == nil {
		h.Write([]byte{byte(fh.Type())})
		h.Write(fh.Bytes())
		return u.ino(layer, ino), h.Sum64() | 1
	}
	return u.ino(layer, ino), uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
}

// originLayer finds, where the layers span several filesystems, the lower
// layer and inode an origin file handle names, so that a copy keeps the
// number it had (layer index in the top bits) across remounts. The file
// handle is opened on each lower filesystem in turn; that needs
// CAP_DAC_READ_SEARCH, without which the copy reports its own number.
func (u *union) originLayer(fh unix.FileHandle) (layer int, ino uint64, ok bool) {
	tried := map[uint64]bool{}
	for i := upperLayer + 1; i < len(u.roots); i++ {
		if tried[u.devIdx[i]] {
			continue
		}
		tried[u.devIdx[i]] = true
		// open_by_handle_at takes no O_PATH descriptor for the mount.
		mfd, err := at.Open(at.Loc{Dir: u.roots[i]}, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			continue
		}
		fd, err := unix.OpenByHandleAt(mfd, fh, unix.O_PATH|unix.O_CLOEXEC)
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
func (u *union) originIno(l at.Loc) (uint64, bool) {
	v, err := at.GetXattr(l, u.ns.Name(whiteout.Origin))
	if err != nil {
		return 0, false
	}
	if u.samefs {
		return whiteout.DecodeOriginIno(v)
	}
	if fh, ok := whiteout.OriginHandle(v); ok {
		if ol, o, ok := u.originLayer(fh); ok {
			return u.ino(ol, o), true
		}
	}
	return 0, false
}
