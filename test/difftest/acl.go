package difftest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// POSIX ACLs travel as the xattrs system.posix_acl_access and
// system.posix_acl_default in the kernel's binary form: a little-endian
// u32 version (2), then one entry of u16 tag, u16 permissions and u32 id
// per line of the ACL. The tester writes them itself (no setfacl needed)
// and shows them in the short text form of setfacl, entries separated by
// commas: "u::rw-,u:1001:r--,g::r--,m::rw-,o::---".

const (
	xattrACL    = "system.posix_acl_access"
	xattrDefACL = "system.posix_acl_default"
)

// The tags of ACL entries (include/uapi/linux/posix_acl.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclUndefinedID = 0xffffffff
	aclVersion     = 2
)

type aclEntry struct {
	tag  uint16
	perm uint16 // rwx as 4, 2, 1
	id   uint32
}

var aclTagText = map[uint16]string{aclUserObj: "u", aclUser: "u", aclGroupObj: "g", aclGroup: "g", aclMask: "m", aclOther: "o"}

func permText(p uint16) string {
	b := []byte("---")
	if p&4 != 0 {
		b[0] = 'r'
	}
	if p&2 != 0 {
		b[1] = 'w'
	}
	if p&1 != 0 {
		b[2] = 'x'
	}
	if p&^7 != 0 {
		return string(b) + fmt.Sprintf("+%o", p&^7) // not made by the tester
	}
	return string(b)
}

// aclText renders the binary form of an ACL xattr.
func aclText(b []byte) string {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclVersion || (len(b)-4)%8 != 0 {
		return fmt.Sprintf("<bad acl %x>", b)
	}
	var parts []string
	for b = b[4:]; len(b) > 0; b = b[8:] {
		tag, perm, id := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint32(b[4:])
		t, ok := aclTagText[tag]
		if !ok {
			t = fmt.Sprintf("tag%#x", tag)
		}
		q := ""
		if tag == aclUser || tag == aclGroup {
			q = strconv.FormatUint(uint64(id), 10)
		}
		parts = append(parts, t+":"+q+":"+permText(perm))
	}
	return strings.Join(parts, ",")
}

// aclBinary parses the text form into the xattr's binary form, entries in
// the order given (the generator writes them in the kernel's order; an
// ACL the kernel finds invalid is refused at setxattr, on both sides).
func aclBinary(text string) ([]byte, error) {
	out := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range strings.Split(text, ",") {
		f := strings.Split(e, ":")
		if len(f) != 3 || len(f[2]) != 3 {
			return nil, fmt.Errorf("acl entry %q", e)
		}
		var tag uint16
		id := uint32(aclUndefinedID)
		switch f[0] {
		case "u", "g":
			tag = aclUserObj
			if f[0] == "g" {
				tag = aclGroupObj
			}
			if f[1] != "" {
				n, err := strconv.ParseUint(f[1], 10, 32)
				if err != nil {
					return nil, fmt.Errorf("acl entry %q: %v", e, err)
				}
				tag <<= 1 // aclUser, aclGroup
				id = uint32(n)
			}
		case "m":
			tag = aclMask
		case "o":
			tag = aclOther
		default:
			return nil, fmt.Errorf("acl entry %q: tag", e)
		}
		var perm uint16
		for i, c := range f[2] {
			switch {
			case c == '-':
			case c == rune("rwx"[i]):
				perm |= 4 >> i
			default:
				return nil, fmt.Errorf("acl entry %q: perms", e)
			}
		}
		out = binary.LittleEndian.AppendUint16(out, tag)
		out = binary.LittleEndian.AppendUint16(out, perm)
		out = binary.LittleEndian.AppendUint32(out, id)
	}
	return out, nil
}

// readACL returns the text form of the ACL xattr name of p (a
// /proc/self/fd path, not following a final symlink), "" when there is
// none.
func readACL(p, name string) (string, error) {
	buf := make([]byte, 1024)
	n, err := unix.Lgetxattr(p, name, buf)
	switch err {
	case nil:
		return aclText(buf[:n]), nil
	case unix.ENODATA, unix.EOPNOTSUPP:
		return "", nil
	}
	return "", err
}

var aclPerms = []string{"---", "r--", "rw-", "r-x", "rwx", "-w-", "--x"}

// genACL makes a random ACL. mode, when >= 0, gives the owner, mask and
// other entries (an access ACL that keeps a file's mode as it is); a
// default ACL takes random ones. Named entries use the tester's ids; now
// and then an ACL lacks its mask, which the kernel refuses (EINVAL).
func genACL(rng *rand.Rand, mode int) string {
	perm := func() string { return aclPerms[rng.IntN(len(aclPerms))] }
	bits := func(shift int) string {
		if mode < 0 {
			return perm()
		}
		return permText(uint16(mode>>shift) & 7)
	}
	pick := func(n int) []int {
		ids := append([]int(nil), credIDs[1:]...)
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		ids = ids[:n]
		sort.Ints(ids)
		return ids
	}
	e := []string{"u::" + bits(6)}
	users, groups := pick(rng.IntN(3)), pick(rng.IntN(2))
	for _, id := range users {
		e = append(e, fmt.Sprintf("u:%d:%s", id, perm()))
	}
	e = append(e, "g::"+perm())
	for _, id := range groups {
		e = append(e, fmt.Sprintf("g:%d:%s", id, perm()))
	}
	if len(users)+len(groups) > 0 && rng.IntN(20) != 0 {
		e = append(e, "m::"+bits(3))
	} else if len(users)+len(groups) == 0 {
		// A minimal ACL: the group entry is the mode's group bits.
		e[len(e)-1] = "g::" + bits(3)
	}
	e = append(e, "o::"+bits(0))
	return strings.Join(e, ",")
}
