package whiteout

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/layerfs/layerfs/copyup/at"
	"golang.org/x/sys/unix"
)

// The origin record (kernel struct ovl_fb): version 0, magic 0xfb, total
// length, flags, file handle type, a 16-byte uuid, then the file handle.
// layerfs leaves the uuid null, as the kernel does when all layers share
// a filesystem.
const (
	originMagic  = 0xfb
	originHeader = 21
)

// EncodeOrigin returns the origin record naming the inode at l, or nil
// where its filesystem has no file handles.
func EncodeOrigin(l at.Loc) []byte {
	flags := 0
	if l.Name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	h, _, err := unix.NameToHandleAt(l.Dir, l.Name, flags)
	if err != nil {
		return nil
	}
	fid := h.Bytes()
	b := make([]byte, originHeader+len(fid))
	b[0], b[1], b[2], b[3], b[4] = 0, originMagic, byte(len(b)), 0, byte(h.Type())
	copy(b[originHeader:], fid)
	return b
}

// OriginProblem says what is wrong with an origin record, "" when it is
// well formed. An empty value is valid: the kernel records a null origin
// when the lower filesystem has no file handles. A newer version or
// unknown flags are valid too: the kernel reads them as "origin unknown".
func OriginProblem(v []byte) string {
	switch {
	case len(v) == 0:
		return ""
	case len(v) < originHeader:
		return fmt.Sprintf("origin record too short (%d bytes)", len(v))
	case v[1] != originMagic:
		return fmt.Sprintf("origin record has magic %#x, not %#x", v[1], originMagic)
	case int(v[2]) != len(v):
		return fmt.Sprintf("origin record says it is %d bytes long but has %d", v[2], len(v))
	}
	return ""
}

// OriginHandle returns the file handle an origin record holds.
func OriginHandle(v []byte) (unix.FileHandle, bool) {
	if len(v) <= originHeader || OriginProblem(v) != "" {
		return unix.FileHandle{}, false
	}
	return unix.NewFileHandle(int32(v[4]), v[originHeader:]), true
}

// DecodeOriginIno extracts the inode number from an origin record for the
// file handle types whose layout is known (ext4/xfs FILEID_INO32_GEN,
// FILEID_INO64_GEN, tmpfs).
func DecodeOriginIno(v []byte) (uint64, bool) {
	if len(v) < originHeader || v[1] != originMagic || int(v[2]) != len(v) {
		return 0, false
	}
	typ, fid := v[4], v[originHeader:]
	switch {
	case (typ == 1 || typ == 2) && len(fid) == 12: // tmpfs: gen, ino lo, ino hi
		return uint64(binary.LittleEndian.Uint32(fid[4:])) | uint64(binary.LittleEndian.Uint32(fid[8:]))<<32, true
	case typ == 1 && len(fid) == 8, typ == 2 && len(fid) >= 8: // ino32, gen [, parent]
		return uint64(binary.LittleEndian.Uint32(fid)), true
	case (typ == 0x81 || typ == 0x82) && len(fid) >= 12: // ino64, gen [, parent]
		return binary.LittleEndian.Uint64(fid), true
	}
	return 0, false
}

// IndexName is the name of the index entry (W/index) of the inode an
// origin record names: the record in hex, as the kernel names it.
func IndexName(origin []byte) string { return hex.EncodeToString(origin) }

// The index entry of a hard-linked file carries the number of names the
// union shows as the kernel writes it: "U" (relative to the upper inode's
// own link count) or "L" (relative to the lower's), then a signed delta.

// FormatNlink returns the record "U±delta".
func FormatNlink(delta int) []byte {
	b := []byte{'U'}
	if delta >= 0 {
		b = append(b, '+')
	}
	return strconv.AppendInt(b, int64(delta), 10)
}

// ParseNlink reads a link count record.
func ParseNlink(v []byte) (base byte, delta int, ok bool) {
	if len(v) < 2 || (v[0] != 'U' && v[0] != 'L') {
		return 0, 0, false
	}
	d, err := strconv.Atoi(string(v[1:]))
	return v[0], d, err == nil
}
