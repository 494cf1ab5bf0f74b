package unionfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// IDMap maps Size ids starting at Stored (as the layers keep them) to ids
// starting at Shown (as the mount shows them).
type IDMap struct {
	Stored, Shown, Size uint32
}

// ParseIDMaps reads fuse-overlayfs's "UID:MAPPED-UID:LEN[:...]" form: the
// id stored in the layers, the id shown through the mount, the length.
// podman sends it with a leading colon.
func ParseIDMaps(s string) ([]IDMap, error) {
	s = strings.TrimPrefix(s, ":")
	parts := strings.Split(s, ":")
	if len(parts)%3 != 0 || s == "" {
		return nil, fmt.Errorf("id mapping %q: want STORED:SHOWN:LENGTH triples", s)
	}
	var out []IDMap
	for i := 0; i < len(parts); i += 3 {
		var v [3]uint32
		for j := range v {
			n, err := strconv.ParseUint(parts[i+j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id mapping %q: %q is not a number", s, parts[i+j])
			}
			v[j] = uint32(n)
		}
		if v[2] == 0 || uint64(v[0])+uint64(v[2]) > 1<<32 || uint64(v[1])+uint64(v[2]) > 1<<32 {
			return nil, fmt.Errorf("id mapping %q: range %d:%d:%d is empty or overflows", s, v[0], v[1], v[2])
		}
		out = append(out, IDMap{v[0], v[1], v[2]})
	}
	return out, nil
}

// idMapper translates ownership between the layers and the mount.
type idMapper struct {
	uids, gids           []IDMap
	squashUID            *uint32 // every entry appears owned by this uid
	squashGID            *uint32
	overflowU, overflowG uint32
}

func newIDMapper(o *Options) *idMapper {
	if len(o.UIDMap) == 0 && len(o.GIDMap) == 0 && o.SquashUID == nil && o.SquashGID == nil {
		return nil
	}
	return &idMapper{uids: o.UIDMap, gids: o.GIDMap, squashUID: o.SquashUID, squashGID: o.SquashGID,
		overflowU: readOverflow("uid"), overflowG: readOverflow("gid")}
}

func readOverflow(kind string) uint32 {
	b, err := os.ReadFile("/proc/sys/fs/overflow" + kind)
	if n, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err == nil && perr == nil {
		return uint32(n)
	}
	return 65534
}

// toMount maps a stored id to the id shown; unmapped ids show as the
// overflow id, as the kernel shows them in a user namespace.
func toMount(maps []IDMap, id, overflow uint32) uint32 {
	if len(maps) == 0 {
		return id
	}
	for _, m := range maps {
		if id >= m.Stored && id-m.Stored < m.Size {
			return m.Shown + (id - m.Stored)
		}
	}
	return overflow
}

// toLayer maps an id given through the mount to the stored id.
func toLayer(maps []IDMap, id uint32) (uint32, bool) {
	if len(maps) == 0 {
		return id, true
	}
	for _, m := range maps {
		if id >= m.Shown && id-m.Shown < m.Size {
			return m.Stored + (id - m.Shown), true
		}
	}
	return 0, false
}

// show rewrites the owner of attributes read from a layer.
func (m *idMapper) show(uid, gid *uint32) {
	if m == nil {
		return
	}
	*uid = toMount(m.uids, *uid, m.overflowU)
	*gid = toMount(m.gids, *gid, m.overflowG)
	if m.squashUID != nil {
		*uid = *m.squashUID
	}
	if m.squashGID != nil {
		*gid = *m.squashGID
	}
}

// store maps ids given through the mount (chown, a creator's ids) to the
// ids written to the upper layer; -1 means "unchanged" and stays -1.
func (m *idMapper) store(uid, gid int) (int, int, syscall.Errno) {
	if m == nil {
		return uid, gid, 0
	}
	if uid >= 0 {
		h, ok := toLayer(m.uids, uint32(uid))
		if !ok {
			return 0, 0, syscall.EINVAL
		}
		uid = int(h)
	}
	if gid >= 0 {
		h, ok := toLayer(m.gids, uint32(gid))
		if !ok {
			return 0, 0, syscall.EINVAL
		}
		gid = int(h)
	}
	return uid, gid, 0
}

// showACL maps the ids of an ACL value read from a layer to the ids the
// mount shows, as show does for owners (squashing leaves named entries).
func (m *idMapper) showACL(v []byte) {
	if m == nil {
		return
	}
	mapACL(v, func(id uint32) (uint32, bool) { return toMount(m.uids, id, m.overflowU), true },
		func(id uint32) (uint32, bool) { return toMount(m.gids, id, m.overflowG), true })
}

// storeACL maps the ids of an ACL value given through the mount to the
// stored ids; EINVAL where one has no mapping.
func (m *idMapper) storeACL(v []byte) syscall.Errno {
	if m == nil {
		return 0
	}
	return mapACL(v, func(id uint32) (uint32, bool) { return toLayer(m.uids, id) },
		func(id uint32) (uint32, bool) { return toLayer(m.gids, id) })
}
