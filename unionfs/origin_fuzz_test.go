package unionfs

import "testing"

// Origin records come from layers, which may be hostile: decoding must
// never panic and must only accept records of the kernel's shape.
func FuzzDecodeOrigin(f *testing.F) {
	f.Add([]byte{0, 0xfb, 29, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa1, 0x40, 0x98, 0, 0x8d, 0xe4, 0xac, 0x16})
	f.Add([]byte{0, 0xfb, 21, 0, 0x81})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ino, ok := decodeOriginIno(b)
		if ok && (len(b) < 21 || b[1] != 0xfb || int(b[2]) != len(b)) {
			t.Fatalf("accepted a malformed record %x as ino %d", b, ino)
		}
	})
}
