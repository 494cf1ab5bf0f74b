package difftest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Op is one operation applied to both mounts. Paths are relative to the
// mount root; no symlink is ever followed (every path is resolved with
// RESOLVE_NO_SYMLINKS and the last component is never followed).
type Op struct {
	Kind   string
	Path   string
	Path2  string // rename and link destination
	Target string // symlink target
	Mode   uint32
	Uid    int
	Gid    int
	Off    int64
	Len    int64
	Pat    int
	Size   int64
	Flags  string // rename: plain|noreplace|exchange; truncate: path|fd|otrunc; write: wronly|rdwr; setacl, delacl: access|default; access: r, w, x, f or a mix
	Name   string // xattr name
	Value  string // xattr value; setacl: the ACL in text form
	Time   int64
	// As is the credential the op runs as; nil: the tester's own (root).
	As *Cred
	// Umask is the umask the op runs with (in a helper: with As, or as
	// root when As is nil); the tester's own is 0.
	Umask int
}

// opKinds, with how often the generator picks each.
var opKinds = []struct {
	kind   string
	weight int
}{
	{"create", 8}, {"write", 8}, {"append", 4}, {"truncate", 5},
	{"chmod", 4}, {"chown", 4}, {"utimes", 3}, {"setxattr", 4},
	{"removexattr", 3}, {"mkdir", 6}, {"rmdir", 5}, {"unlink", 7},
	{"rename", 12}, {"link", 4}, {"symlink", 3}, {"mkfifo", 2},
	{"rocopyup", 4}, {"stat", 3}, {"readdir", 3}, {"read", 3},
	{"getxattr", 2}, {"dropcaches", 1},
	{"setacl", 5}, {"delacl", 1}, {"getacl", 2}, {"access", 3},
	{"statfs", 1}, {"setcap", 1}, {"tmpfile", 3},
}

// String is the readable, parseable form of an op.
func (o Op) String() string {
	f := []string{o.Kind, o.Path}
	if o.Path2 != "" {
		f = append(f, o.Path2)
	}
	add := func(format string, args ...any) { f = append(f, fmt.Sprintf(format, args...)) }
	switch o.Kind {
	case "create", "tmpfile":
		add("mode=%04o len=%d pat=%d", o.Mode, o.Len, o.Pat)
	case "write":
		add("off=%d len=%d pat=%d flags=%s", o.Off, o.Len, o.Pat, o.Flags)
	case "append":
		add("len=%d pat=%d", o.Len, o.Pat)
	case "truncate":
		add("size=%d flags=%s", o.Size, o.Flags)
	case "chmod", "mkdir", "mkfifo":
		add("mode=%04o", o.Mode)
	case "chown":
		add("uid=%d gid=%d", o.Uid, o.Gid)
	case "utimes":
		add("time=%d", o.Time)
	case "setxattr":
		add("name=%s value=%s", o.Name, o.Value)
	case "removexattr":
		add("name=%s", o.Name)
	case "rename":
		add("flags=%s", o.Flags)
	case "symlink":
		add("target=%s", o.Target)
	case "rocopyup":
		add("off=%d len=%d pat=%d", o.Off, o.Len, o.Pat)
	case "setacl":
		add("flags=%s acl=%s", o.Flags, o.Value)
	case "delacl", "access":
		add("flags=%s", o.Flags)
	}
	if o.Umask != 0 {
		add("umask=%04o", o.Umask)
	}
	if o.As != nil {
		add("as=%s", o.As)
	}
	return strings.Join(f, " ")
}

// ParseOp reads the String form back.
func ParseOp(line string) (Op, error) {
	var o Op
	f := strings.Fields(line)
	if len(f) < 2 {
		return o, fmt.Errorf("op: bad line %q", line)
	}
	o.Kind = f[0]
	var pos []string
	for _, t := range f[1:] {
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			pos = append(pos, t)
			continue
		}
		var err error
		var n int64
		switch k {
		case "mode":
			n, err = strconv.ParseInt(v, 8, 32)
			o.Mode = uint32(n)
		case "uid":
			o.Uid, err = strconv.Atoi(v)
		case "gid":
			o.Gid, err = strconv.Atoi(v)
		case "off":
			o.Off, err = strconv.ParseInt(v, 10, 64)
		case "len":
			o.Len, err = strconv.ParseInt(v, 10, 64)
		case "pat":
			o.Pat, err = strconv.Atoi(v)
		case "size":
			o.Size, err = strconv.ParseInt(v, 10, 64)
		case "flags":
			o.Flags = v
		case "name":
			o.Name = v
		case "value":
			o.Value = v
		case "time":
			o.Time, err = strconv.ParseInt(v, 10, 64)
		case "target":
			o.Target = v
		case "acl":
			o.Value = v
		case "umask":
			n, err = strconv.ParseInt(v, 8, 32)
			o.Umask = int(n)
		case "as":
			o.As, err = parseCred(v)
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return o, fmt.Errorf("op %q: %v", line, err)
		}
	}
	if len(pos) < 1 || len(pos) > 2 {
		return o, fmt.Errorf("op %q: want 1 or 2 paths", line)
	}
	o.Path = pos[0]
	if len(pos) == 2 {
		o.Path2 = pos[1]
	}
	return o, nil
}

// ParseOps reads one op a line; blank lines and # comments are skipped.
func ParseOps(text string) ([]Op, error) {
	var out []Op
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		o, err := ParseOp(line)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// FormatOps writes ops one a line.
func FormatOps(ops []Op) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// newNames returns the names an op makes.
func (o Op) newNames() []string {
	switch o.Kind {
	case "create", "tmpfile", "mkdir", "mkfifo", "symlink":
		return []string{o.Path}
	case "rename", "link":
		return []string{o.Path2}
	}
	return nil
}

// Result is what one op did on one mount.
type Result struct {
	Errno syscall.Errno
	Out   string // observations of successful reads
}

func (r Result) String() string {
	s := "ok"
	if r.Errno != 0 {
		s = errnoName(r.Errno)
	}
	if r.Out != "" {
		s += " " + r.Out
	}
	return s
}

func errnoName(e syscall.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno%d", int(e))
}

func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// openParent resolves the directory part of p below root without
// following any symlink and returns an O_PATH fd for it and the last
// component.
func openParent(root int, p string) (int, string, error) {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(root, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return -1, "", err
	}
	if base == "" {
		base = "."
	}
	return fd, base, nil
}

func procPath(fd int, name string) string {
	return fmt.Sprintf("/proc/self/fd/%d/%s", fd, name)
}

const openFlags = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC

func shortHash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// readAll reads the whole of fd from offset 0.
func readAll(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return out, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

func writeFull(fd int, b []byte, off int64, appendMode bool) error {
	for len(b) > 0 {
		var n int
		var err error
		if appendMode {
			n, err = unix.Write(fd, b)
		} else {
			n, err = unix.Pwrite(fd, b, off)
		}
		if err != nil {
			return err
		}
		b = b[n:]
		off += int64(n)
	}
	return nil
}

// Apply runs o against the mount whose root is the O_PATH fd root.
func Apply(root int, o Op) Result {
	out, err := apply(root, o)
	return Result{Errno: toErrno(err), Out: out}
}

func apply(root int, o Op) (string, error) {
	if o.Kind == "dropcaches" {
		// Evict unused dentries and inodes everywhere: the next ops look
		// everything up afresh (FUSE FORGET, then LOOKUP). Global, so the
		// kernel side's call serves both mounts.
		return "", os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	}
	pfd, base, err := openParent(root, o.Path)
	if err != nil {
		return "", err
	}
	defer unix.Close(pfd)
	lstat := func() (unix.Stat_t, error) {
		var st unix.Stat_t
		err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
		return st, err
	}
	switch o.Kind {
	case "create":
		fd, err := unix.Openat(pfd, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|openFlags, o.Mode)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return "", writeFull(fd, Content(o.Pat, 0, o.Len), 0, false)
	case "tmpfile":
		// An unnamed file in the directory, written, then linked in
		// under the op's name (the open(2) recipe for users).
		fd, err := unix.Openat(pfd, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, o.Mode)
		if err != nil {
			return "open", err
		}
		defer unix.Close(fd)
		if err := writeFull(fd, Content(o.Pat, 0, o.Len), 0, false); err != nil {
			return "write", err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return "fstat", err
		}
		desc := fmt.Sprintf("%04o uid=%d gid=%d", st.Mode&0o7777, st.Uid, st.Gid)
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), pfd, base, unix.AT_SYMLINK_FOLLOW); err != nil {
			return desc + " link", err
		}
		return desc, nil
	case "write", "append":
		flags := unix.O_WRONLY
		if o.Flags == "rdwr" {
			flags = unix.O_RDWR
		}
		if o.Kind == "append" {
			flags |= unix.O_APPEND
		}
		fd, err := unix.Openat(pfd, base, flags|openFlags, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		return "", writeFull(fd, Content(o.Pat, o.Off, o.Len), o.Off, o.Kind == "append")
	case "truncate":
		switch o.Flags {
		case "fd", "otrunc":
			flags := unix.O_WRONLY
			if o.Flags == "otrunc" {
				flags |= unix.O_TRUNC
			}
			fd, err := unix.Openat(pfd, base, flags|openFlags, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			if o.Flags == "otrunc" {
				return "", nil
			}
			return "", unix.Ftruncate(fd, o.Size)
		default:
			// truncate(2) follows a final symlink: refuse as O_NOFOLLOW.
			st, err := lstat()
			if err != nil {
				return "", err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return "", unix.ELOOP
			}
			return "", unix.Truncate(procPath(pfd, base), o.Size)
		}
	case "chmod":
		return "", unix.Fchmodat(pfd, base, o.Mode, unix.AT_SYMLINK_NOFOLLOW)
	case "chown":
		return "", unix.Fchownat(pfd, base, o.Uid, o.Gid, unix.AT_SYMLINK_NOFOLLOW)
	case "utimes":
		t := unix.NsecToTimespec(o.Time * 1e9)
		return "", unix.UtimesNanoAt(pfd, base, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
	case "setxattr":
		return "", unix.Lsetxattr(procPath(pfd, base), o.Name, []byte(o.Value), 0)
	case "removexattr":
		return "", unix.Lremovexattr(procPath(pfd, base), o.Name)
	case "mkdir":
		return "", unix.Mkdirat(pfd, base, o.Mode)
	case "rmdir":
		return "", unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
	case "unlink":
		return "", unix.Unlinkat(pfd, base, 0)
	case "rename", "link":
		pfd2, base2, err := openParent(root, o.Path2)
		if err != nil {
			return "", err
		}
		defer unix.Close(pfd2)
		if o.Kind == "link" {
			return "", unix.Linkat(pfd, base, pfd2, base2, 0)
		}
		var flags uint
		switch o.Flags {
		case "noreplace":
			flags = unix.RENAME_NOREPLACE
		case "exchange":
			flags = unix.RENAME_EXCHANGE
		}
		return "", unix.Renameat2(pfd, base, pfd2, base2, flags)
	case "symlink":
		return "", unix.Symlinkat(o.Target, pfd, base)
	case "mkfifo":
		return "", unix.Mknodat(pfd, base, unix.S_IFIFO|o.Mode, 0)
	case "rocopyup":
		// Open read-only (on the lower file), read, write through a second
		// descriptor (copy-up), then read again through the first one.
		fd1, err := unix.Openat(pfd, base, unix.O_RDONLY|openFlags, 0)
		if err != nil {
			return "open1", err
		}
		defer unix.Close(fd1)
		buf := make([]byte, 4096)
		if _, err := unix.Pread(fd1, buf, 0); err != nil {
			return "read1", err
		}
		fd2, err := unix.Openat(pfd, base, unix.O_WRONLY|openFlags, 0)
		if err != nil {
			return "open2", err
		}
		err = writeFull(fd2, Content(o.Pat, o.Off, o.Len), o.Off, false)
		unix.Close(fd2)
		if err != nil {
			return "write2", err
		}
		b, err := readAll(fd1)
		if err != nil {
			return "read1again", err
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd1, &st); err != nil {
			return "fstat1", err
		}
		return fmt.Sprintf("read=%s n=%d fstat.size=%d", shortHash(b), len(b), st.Size), nil
	case "stat":
		st, err := lstat()
		if err != nil {
			return "", err
		}
		s := fmt.Sprintf("%s %04o uid=%d gid=%d", typeName(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			s += fmt.Sprintf(" size=%d nlink=%d", st.Size, st.Nlink)
		}
		return s, nil
	case "read":
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|openFlags, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		b, err := readAll(fd)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s n=%d", shortHash(b), len(b)), nil
	case "readdir":
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|openFlags, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		ents, err := readDir(fd)
		if err != nil {
			return "", err
		}
		var parts []string
		for _, e := range ents {
			s := e.name + ":" + dtName(e.typ)
			var st unix.Stat_t
			if err := unix.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				s += ":stat-" + errnoName(toErrno(err))
			} else {
				if st.Ino != e.ino {
					s += ":d_ino!=st_ino"
				}
				if typeName(st.Mode) != dtName(e.typ) {
					s += ":d_type!=st_mode"
				}
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, " "), nil
	case "getxattr":
		xs, err := userXattrs(procPath(pfd, base))
		return strings.Join(xs, " "), err
	case "setcap":
		// cap_net_bind_service=ep, as setcap(8) writes it: a write or
		// chown by another user then drops it (ATTR_KILL_PRIV).
		return "", unix.Lsetxattr(procPath(pfd, base), "security.capability", fileCaps, 0)
	case "setacl":
		b, err := aclBinary(o.Value)
		if err != nil {
			return "bad acl", unix.EINVAL
		}
		return "", unix.Lsetxattr(procPath(pfd, base), aclXattr(o.Flags), b, 0)
	case "delacl":
		// As setfacl -x: read the ACL first. Out says whether there
		// was one ("had", "none", or the error reading it).
		had := "had"
		if _, err := unix.Lgetxattr(procPath(pfd, base), aclXattr(o.Flags), nil); err == unix.ENODATA {
			had = "none"
		} else if err != nil {
			had = "<" + errnoName(toErrno(err)) + ">"
		}
		return had, unix.Lremovexattr(procPath(pfd, base), aclXattr(o.Flags))
	case "getacl":
		// Both ACLs, each as text, "-" when there is none, or the
		// error reading it.
		var parts []string
		for _, x := range []string{xattrACL, xattrDefACL} {
			buf := make([]byte, 1024)
			n, err := unix.Lgetxattr(procPath(pfd, base), x, buf)
			switch {
			case err == unix.ENODATA:
				parts = append(parts, "-")
			case err != nil:
				parts = append(parts, "<"+errnoName(toErrno(err))+">")
			default:
				parts = append(parts, aclText(buf[:n]))
			}
		}
		return "access=" + parts[0] + " default=" + parts[1], nil
	case "statfs":
		// The name length only: the rest is the upper filesystem's.
		fd, err := unix.Openat(pfd, base, unix.O_PATH|openFlags, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		var sf unix.Statfs_t
		if err := unix.Fstatfs(fd, &sf); err != nil {
			return "", err
		}
		return fmt.Sprintf("namelen=%d", sf.Namelen), nil
	case "access":
		mode := uint32(0)
		for _, c := range o.Flags {
			switch c {
			case 'r':
				mode |= unix.R_OK
			case 'w':
				mode |= unix.W_OK
			case 'x':
				mode |= unix.X_OK
			}
		}
		return "", unix.Faccessat2(pfd, base, mode, unix.AT_SYMLINK_NOFOLLOW)
	}
	return "", fmt.Errorf("unknown op %q", o.Kind)
}

// fileCaps is a struct vfs_cap_data (revision 2) with
// CAP_NET_BIND_SERVICE (10) permitted and effective.
var fileCaps = []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// aclXattr names the xattr of an ACL op's flags.
func aclXattr(flags string) string {
	if flags == "default" {
		return xattrDefACL
	}
	return xattrACL
}

type dent struct {
	name string
	typ  uint8
	ino  uint64
}

// readDir lists an open directory (without . and ..), sorted by name.
func readDir(fd int) ([]dent, error) {
	var out []dent
	buf := make([]byte, 16<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			break
		}
		for b := buf[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			reclen := int(b[16]) | int(b[17])<<8
			ino := uint64(0)
			for i := 7; i >= 0; i-- {
				ino = ino<<8 | uint64(b[i])
			}
			name := b[19:reclen]
			if i := strings.IndexByte(string(name), 0); i >= 0 {
				name = name[:i]
			}
			if s := string(name); s != "." && s != ".." {
				out = append(out, dent{s, b[18], ino})
			}
			b = b[reclen:]
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "reg"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "lnk"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	case unix.S_IFSOCK:
		return "sock"
	}
	return "?"
}

func dtName(t uint8) string {
	switch t {
	case unix.DT_REG:
		return "reg"
	case unix.DT_DIR:
		return "dir"
	case unix.DT_LNK:
		return "lnk"
	case unix.DT_FIFO:
		return "fifo"
	case unix.DT_CHR:
		return "chr"
	case unix.DT_BLK:
		return "blk"
	case unix.DT_SOCK:
		return "sock"
	}
	return "unknown"
}

// userXattrs lists the xattrs of p (not following a final symlink) that
// users set: user.*, security.* and trusted.* but the union's own
// trusted.overlay.* (POSIX ACLs are compared on their own), as sorted
// "name=value".
func userXattrs(p string) ([]string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if !shownXattr(name) {
			continue
		}
		v := make([]byte, 4096)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			out = append(out, name+"=<"+errnoName(toErrno(err))+">")
			continue
		}
		out = append(out, name+"="+printable(v[:m]))
	}
	sort.Strings(out)
	return out, nil
}

// printable is b as text, or in hex when it is not text.
func printable(b []byte) string {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return "0x" + hex.EncodeToString(b)
		}
	}
	return string(b)
}

func shownXattr(name string) bool {
	switch {
	case strings.HasPrefix(name, "trusted.overlay."):
		return false
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "security."), strings.HasPrefix(name, "trusted."):
		return true
	}
	return false
}

// View is the merged tree as the generator sees it: every path, sorted.
type View struct {
	Paths  []string
	Type   map[string]uint32 // S_IFMT
	Size   map[string]int64
	Xattrs map[string][]string // names of the xattrs userXattrs lists
	// Owners and permission bits, of the root ("") too.
	Uid, Gid map[string]int
	Mode     map[string]uint32
}

// emptyDirs returns the directories with no entry.
func (v *View) emptyDirs() []string {
	full := map[string]bool{}
	for _, p := range v.Paths {
		full[path.Dir(p)] = true
	}
	var out []string
	for _, p := range v.Paths {
		if v.Type[p] == unix.S_IFDIR && !full[p] {
			out = append(out, p)
		}
	}
	return out
}

func (v *View) dirs() []string {
	out := []string{""}
	for _, p := range v.Paths {
		if v.Type[p] == unix.S_IFDIR {
			out = append(out, p)
		}
	}
	return out
}

// GenOp picks a random op over the current merged view v.
func GenOp(rng *rand.Rand, v *View, s *Stack) Op {
	weight := func(kind string, w int) int {
		if kind == "link" && !Hardlinks {
			return 0
		}
		return w
	}
	total := 0
	for _, k := range opKinds {
		total += weight(k.kind, k.weight)
	}
	r := rng.IntN(total)
	var kind string
	for _, k := range opKinds {
		if w := weight(k.kind, k.weight); r < w {
			kind = k.kind
			break
		} else {
			r -= w
		}
	}
	g := opGen{rng: rng, v: v, s: s}
	o := Op{Kind: kind}
	switch kind {
	case "create", "tmpfile":
		o.Path = g.fresh()
		o.Mode = fileModes[rng.IntN(len(fileModes))]
		o.Len, o.Pat = g.dataLen(), rng.IntN(1000)
	case "write", "append", "rocopyup":
		o.Path = g.existing(unix.S_IFREG, 90)
		o.Len, o.Pat = g.dataLen(), rng.IntN(1000)
		if o.Len == 0 {
			o.Len = 1
		}
		if kind != "append" {
			o.Off = g.offset(o.Path)
		}
		if kind == "write" {
			o.Flags = []string{"wronly", "rdwr"}[rng.IntN(2)]
		}
	case "truncate":
		o.Path = g.existing(unix.S_IFREG, 90)
		o.Flags = []string{"path", "fd", "otrunc"}[rng.IntN(3)]
		if o.Flags != "otrunc" {
			o.Size = g.offset(o.Path)
		}
	case "chmod":
		o.Path = g.existingAny(true)
		o.Mode = append(fileModes, dirModes...)[rng.IntN(len(fileModes)+len(dirModes))]
	case "chown":
		o.Path = g.existingAny(true)
		o.Uid, o.Gid = []int{-1, 0, 1000, 1001, 1002, 65534}[rng.IntN(6)], []int{-1, 0, 1000, 1001, 1002, 65534}[rng.IntN(6)]
	case "utimes":
		o.Path = g.existingAny(true)
		o.Time = 978307200 + int64(rng.IntN(100000))
	case "setxattr", "removexattr":
		o.Path = g.existingAny(true)
		o.Name = xattrKeys[rng.IntN(len(xattrKeys))]
		if kind == "setxattr" {
			o.Value = "w" + strconv.Itoa(rng.IntN(100))
		} else if rng.IntN(10) < 7 {
			// Mostly an xattr that is there.
			var with []string
			for _, p := range v.Paths {
				if len(v.Xattrs[p]) > 0 {
					with = append(with, p)
				}
			}
			if len(with) > 0 {
				o.Path = with[rng.IntN(len(with))]
				o.Name = v.Xattrs[o.Path][rng.IntN(len(v.Xattrs[o.Path]))]
			}
		}
	case "mkdir":
		o.Path = g.fresh()
		o.Mode = []uint32{0o755, 0o700, 0o1777, 0o2775, 0o777, 0o3777, 0o2770, 0o000}[rng.IntN(8)]
	case "rmdir":
		o.Path = g.existing(unix.S_IFDIR, 85)
		if e := v.emptyDirs(); len(e) > 0 && rng.IntN(2) == 0 {
			o.Path = e[rng.IntN(len(e))]
		}
	case "unlink":
		o.Path = g.existing(0, 0)
	case "rename":
		o.Path = g.existing(0, 0)
		if rng.IntN(2) == 0 {
			o.Path2 = g.existing(0, 0)
		} else {
			o.Path2 = g.fresh()
		}
		o.Flags = []string{"plain", "plain", "plain", "noreplace", "exchange"}[rng.IntN(5)]
	case "link":
		o.Path = g.existing(unix.S_IFREG, 80)
		o.Path2 = g.fresh()
	case "symlink":
		o.Path = g.fresh()
		o.Target = symlinkTargets[rng.IntN(len(symlinkTargets))]
	case "mkfifo":
		o.Path = g.fresh()
		o.Mode = 0o644
	case "stat", "getxattr":
		o.Path = g.existingAny(true)
	case "read":
		o.Path = g.existing(unix.S_IFREG, 90)
	case "dropcaches":
		o.Path = "."
	case "readdir":
		o.Path = g.existing(unix.S_IFDIR, 90)
		if rng.IntN(5) == 0 {
			o.Path = "."
		}
	case "setacl", "delacl":
		o.Flags = "access"
		if rng.IntN(3) == 0 {
			o.Flags = "default"
			o.Path = g.existing(unix.S_IFDIR, 90)
		} else {
			o.Path = g.existingAny(true)
		}
		if kind == "setacl" {
			mode := -1
			if m, ok := v.Mode[o.Path]; ok && o.Flags == "access" && rng.IntN(3) != 0 {
				mode = int(m) // an ACL that keeps the mode
			}
			o.Value = genACL(rng, mode)
		}
	case "getacl":
		o.Path = g.existingAny(true)
	case "statfs":
		o.Path = g.existing(unix.S_IFDIR, 100)
	case "setcap":
		o.Path = g.existing(unix.S_IFREG, 90)
	case "access":
		o.Path = g.existingAny(true)
		o.Flags = []string{"r", "w", "x", "rw", "rx", "rwx", "f"}[rng.IntN(7)]
	}
	if Credentials && kind != "dropcaches" {
		g.credential(&o)
	}
	return o
}

// umasks the generator gives ops that create.
var umasks = []int{0o022, 0o027, 0o077, 0o002, 0o007}

// credential gives o a credential drawn relative to the owner of its
// target: the entry itself, or its directory for ops that make a name
// (and, half the time, for ops that remove or move one: the sticky bit
// asks about both).
func (g *opGen) credential(o *Op) {
	rng := g.rng
	target := o.Path
	switch o.Kind {
	case "create", "tmpfile", "mkdir", "mkfifo", "symlink":
		target = parentOf(o.Path)
		if rng.IntN(2) == 0 {
			o.Umask = umasks[rng.IntN(len(umasks))]
		}
	case "link":
		if rng.IntN(2) == 0 {
			target = parentOf(o.Path2)
		}
	case "rename":
		switch rng.IntN(3) {
		case 0:
			target = parentOf(o.Path)
		case 1:
			target = parentOf(o.Path2)
		}
	case "unlink", "rmdir":
		if rng.IntN(2) == 0 {
			target = parentOf(o.Path)
		}
	}
	if target == "." {
		target = ""
	}
	if _, ok := g.v.Uid[target]; !ok {
		target = parentOf(target) // a missing name: its directory decides
	}
	o.As = g.genCred(g.v.Uid[target], g.v.Gid[target])
	if o.Kind == "chown" && o.As.Uid != 0 && rng.IntN(5) < 3 {
		// What a user may do: give a file to one of its groups.
		o.Uid = []int{-1, o.As.Uid}[rng.IntN(2)]
		gs := append([]int{o.As.Gid}, o.As.Groups...)
		o.Gid = gs[rng.IntN(len(gs))]
	}
}

func parentOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

type opGen struct {
	rng *rand.Rand
	v   *View
	s   *Stack
}

// existing picks an existing path, of type typ with percent probability.
func (g *opGen) existing(typ uint32, percent int) string {
	var cands []string
	if typ != 0 && g.rng.IntN(100) < percent {
		for _, p := range g.v.Paths {
			if g.v.Type[p] == typ {
				cands = append(cands, p)
			}
		}
	}
	if len(cands) == 0 {
		cands = g.v.Paths
	}
	if len(cands) == 0 || g.rng.IntN(20) == 0 {
		return g.fresh() // a missing name now and then
	}
	return cands[g.rng.IntN(len(cands))]
}

func (g *opGen) existingAny(rootToo bool) string {
	if rootToo && g.rng.IntN(30) == 0 {
		return "."
	}
	return g.existing(0, 0)
}

// fresh picks a name in an existing directory: a name the layers used
// there (often whited out or existing), a pool name or a new one.
func (g *opGen) fresh() string {
	dirs := g.v.dirs()
	dir := dirs[g.rng.IntN(len(dirs))]
	var name string
	switch r := g.rng.IntN(100); {
	case r < 2:
		name = ".wh." + namePool[g.rng.IntN(len(namePool))]
	case r < 4:
		name = longNames[g.rng.IntN(len(longNames))]
	case r < 45:
		if used := g.s.names(dir); len(used) > 0 {
			name = used[g.rng.IntN(len(used))]
			break
		}
		fallthrough
	case r < 70:
		name = namePool[g.rng.IntN(len(namePool))]
	default:
		name = "n" + strconv.Itoa(g.rng.IntN(6))
	}
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// longNames are names about the longest a name may be (255 bytes): a
// whiteout of the kernel's form needs no room beside them.
var longNames = func() []string {
	var out []string
	for n := 250; n <= 256; n++ {
		out = append(out, strings.Repeat(string(rune('p'+n-250)), n))
	}
	return out
}()

func (g *opGen) dataLen() int64 {
	switch r := g.rng.IntN(10); {
	case r == 0:
		return 0
	case r < 8:
		return 1 + int64(g.rng.IntN(300))
	default:
		return 1 + int64(g.rng.IntN(10000))
	}
}

// offset picks an offset relative to the file's current size.
func (g *opGen) offset(p string) int64 {
	size := g.v.Size[p]
	switch g.rng.IntN(6) {
	case 0:
		return 0
	case 1:
		return size / 2
	case 2:
		return size
	case 3:
		return size + 1 + int64(g.rng.IntN(5000))
	case 4:
		return int64(g.rng.IntN(100))
	default:
		return 70000 + int64(g.rng.IntN(100000))
	}
}
