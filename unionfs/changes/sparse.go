package changes

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"

	"golang.org/x/sys/unix"
)

// extent is a run of data in a file; what lies between extents are holes.
type extent struct{ off, len int64 }

// dataExtents lists the data of the file f (described by st) with
// SEEK_DATA/SEEK_HOLE. sparse is false, and the file is to be written
// whole, when it has no holes or the filesystem cannot tell.
func dataExtents(f *os.File, st *unix.Stat_t) (ext []extent, sparse bool) {
	size := st.Size
	// A file with holes has fewer blocks than its size needs; checking
	// first saves two seeks per ordinary file.
	if size == 0 || st.Blocks*512 >= size {
		return nil, false
	}
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // a hole up to the end
		} else if err != nil || data >= size {
			if err != nil {
				return nil, false
			}
			break
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, false
		}
		hole = min(hole, size)
		ext = append(ext, extent{data, hole - data})
		off = hole
	}
	if len(ext) == 1 && ext[0] == (extent{0, size}) {
		return nil, false
	}
	return ext, true
}

// writeSparse writes the regular file f of hdr.Size bytes, holding data
// only at ext, as a PAX sparse 1.0 entry (GNU tar's format, read by GNU
// tar, bsdtar and Go's archive/tar): PAX records GNU.sparse.major=1,
// minor=0, name and realsize; a ustar header under a stand-in name; then
// the data area, which starts with the map (the count, then offset and
// length of each extent, one decimal per line, padded to a block)
// followed by the extents' data.
//
// Go's tar.Writer drops GNU.sparse.* records, so this entry is formatted
// here and written to the stream under tw once tw has flushed: tw keeps
// no offsets, so its next entry follows on.
func (x *exporter) writeSparse(hdr *tar.Header, f *os.File, ext []extent) error {
	// A final zero-length extent at the end tells extractors the size
	// when the file ends in a hole (GNU tar truncates to it).
	if n := len(ext); n == 0 || ext[n-1].off+ext[n-1].len < hdr.Size {
		ext = append(ext, extent{hdr.Size, 0})
	}
	var m bytes.Buffer
	fmt.Fprintf(&m, "%d\n", len(ext))
	stored := int64(0)
	for _, e := range ext {
		fmt.Fprintf(&m, "%d\n%d\n", e.off, e.len)
		stored += e.len
	}
	m.Write(make([]byte, padding(int64(m.Len()))))
	stored += int64(m.Len())

	recs := map[string]string{
		"GNU.sparse.major":    "1",
		"GNU.sparse.minor":    "0",
		"GNU.sparse.name":     hdr.Name,
		"GNU.sparse.realsize": strconv.FormatInt(hdr.Size, 10),
	}
	for k, v := range hdr.PAXRecords {
		recs[k] = v
	}
	dir, base := path.Split(hdr.Name)
	main := ustarBlock{
		name: path.Join(dir, "GNUSparseFile.0", base), typeflag: tar.TypeReg,
		mode: hdr.Mode, uid: int64(hdr.Uid), gid: int64(hdr.Gid), size: stored, mtime: hdr.ModTime.Unix(),
	}
	main.overflowTo(recs)
	pax := encodePAX(recs)
	ext0 := ustarBlock{name: path.Join(dir, "PaxHeaders.0", base), typeflag: tar.TypeXHeader, size: int64(len(pax))}

	if err := x.tw.Flush(); err != nil {
		return err
	}
	out := x.raw
	out.Write(ext0.bytes())
	out.Write(pax)
	out.Write(make([]byte, padding(int64(len(pax)))))
	out.Write(main.bytes())
	out.Write(m.Bytes())
	for _, e := range ext {
		n, err := io.Copy(out, io.NewSectionReader(f, e.off, e.len))
		if err != nil {
			return err
		}
		if n < e.len {
			return fmt.Errorf("the file shrank while being read (%d of %d bytes at %d)", n, e.len, e.off)
		}
	}
	if _, err := out.Write(make([]byte, padding(stored))); err != nil {
		return err
	}
	x.progress(hdr.Size)
	return nil
}

const blockSize = 512

func padding(n int64) int64 { return -n & (blockSize - 1) }

// ustarBlock is a POSIX ustar header block.
type ustarBlock struct {
	name                        string
	typeflag                    byte
	mode, uid, gid, size, mtime int64
}

// Largest values the octal fields hold: 7 digits, or 11 for size, mtime.
const (
	max7  = 1<<21 - 1
	max11 = 1<<33 - 1
)

// overflowTo moves values the octal fields cannot hold into PAX records.
func (b *ustarBlock) overflowTo(recs map[string]string) {
	move := func(key string, v *int64, max int64) {
		if *v < 0 || *v > max {
			recs[key] = strconv.FormatInt(*v, 10)
			*v = 0
		}
	}
	move("uid", &b.uid, max7)
	move("gid", &b.gid, max7)
	move("size", &b.size, max11)
	move("mtime", &b.mtime, max11)
}

// bytes lays the block out as the ustar spec does (Go's tar.Writer
// writes the same fields the same way).
func (b *ustarBlock) bytes() []byte {
	blk := make([]byte, blockSize)
	copy(blk[0:100], b.name) // the real name is in a PAX record
	octal(blk[100:108], b.mode)
	octal(blk[108:116], b.uid)
	octal(blk[116:124], b.gid)
	octal(blk[124:136], b.size)
	octal(blk[136:148], b.mtime)
	blk[156] = b.typeflag
	copy(blk[257:265], "ustar\x0000")
	octal(blk[329:337], 0) // devmajor
	octal(blk[337:345], 0) // devminor
	copy(blk[148:156], "        ")
	sum := int64(0)
	for _, c := range blk {
		sum += int64(c)
	}
	octal(blk[148:155], sum)
	blk[155] = ' '
	return blk
}

// octal writes v zero-padded to fill field, NUL-terminated.
func octal(field []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	for len(s) < len(field)-1 {
		s = "0" + s
	}
	copy(field, s)
	field[len(field)-1] = 0
}

// encodePAX formats PAX records, sorted by key: "LEN KEY=VALUE\n" where
// LEN counts the whole record, its own digits included.
func encodePAX(recs map[string]string) []byte {
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var buf bytes.Buffer
	for _, k := range keys {
		rest := " " + k + "=" + recs[k] + "\n"
		n := len(rest) + 1
		for len(strconv.Itoa(n))+len(rest) != n {
			n = len(strconv.Itoa(n)) + len(rest)
		}
		buf.WriteString(strconv.Itoa(n) + rest)
	}
	return buf.Bytes()
}
