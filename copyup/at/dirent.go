package at

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Dirent is one raw entry of a directory, as getdents(2) gives it.
type Dirent struct {
	Name string
	Type uint8 // DT_*; DT_UNKNOWN where the filesystem does not say
	Ino  uint64
}

// Mode returns the file type bits (S_IF*) of e's type; DT_UNKNOWN reads
// as a regular file.
func (e Dirent) Mode() uint32 {
	switch e.Type {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return unix.S_IFREG
}

// ReadDir lists the directory dirfd (any descriptor of it, O_PATH too)
// without "." and "..".
func ReadDir(dirfd int) ([]Dirent, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return Dirents(fd)
}

// Dirents lists the directory open for reading at fd, from its start,
// without "." and "..".
func Dirents(fd int) ([]Dirent, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	var out []Dirent
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.LittleEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, Dirent{Name: s, Type: b[18], Ino: binary.LittleEndian.Uint64(b[0:8])})
			}
			b = b[reclen:]
		}
	}
}

// ReadNames lists the names in the directory open for reading at fd.
func ReadNames(fd int) ([]string, error) {
	ents, err := Dirents(fd)
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name
	}
	return names, err
}
