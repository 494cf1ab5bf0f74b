package difftest

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Node is one entry of a walked tree.
type Node struct {
	Type   uint32 // S_IFMT
	Mode   uint32 // permission bits
	Uid    uint32
	Gid    uint32
	Size   int64
	Nlink  uint64
	Ino    uint64
	Mtime  int64
	Hash   string // regular files
	Target string // symlinks
	Xattrs []string
	// ACL and DefACL: the POSIX ACLs in text form ("" none), merged
	// trees.
	ACL, DefACL string
	Opaque      bool // upper dirs
	// Metacopy: an upper file with metadata only (its data is below).
	Metacopy bool
}

// Tree maps a path ("" is the root) to its node.
type Tree map[string]*Node

// WalkMerged walks the tree below the O_PATH dir fd root without following
// symlinks, reading everything the comparison needs.
func WalkMerged(root int) (Tree, error) {
	t := Tree{}
	return t, walk(root, "", func(dirfd int, name, p string, st *unix.Stat_t) (bool, error) {
		n := &Node{
			Type: st.Mode & unix.S_IFMT, Mode: st.Mode & 0o7777, Uid: st.Uid, Gid: st.Gid,
			Size: st.Size, Nlink: uint64(st.Nlink), Ino: st.Ino, Mtime: st.Mtim.Sec,
		}
		if err := readContent(dirfd, name, n); err != nil {
			return false, fmt.Errorf("%s: %w", p, err)
		}
		{
			xs, err := userXattrs(procPath(dirfd, name))
			if err != nil {
				return false, fmt.Errorf("%s: listxattr: %w", p, err)
			}
			n.Xattrs = xs
		}
		if n.Type != unix.S_IFLNK {
			var err error
			pp := procPath(dirfd, name)
			if n.ACL, err = readACL(pp, xattrACL); err != nil {
				return false, fmt.Errorf("%s: acl: %w", p, err)
			}
			if n.DefACL, err = readACL(pp, xattrDefACL); err != nil {
				return false, fmt.Errorf("%s: default acl: %w", p, err)
			}
		}
		t[p] = n
		return n.Type == unix.S_IFDIR, nil
	})
}

func readContent(dirfd int, name string, n *Node) error {
	switch n.Type {
	case unix.S_IFREG:
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|openFlags, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		b, err := readAll(fd)
		if err != nil {
			return err
		}
		n.Hash = shortHash(b)
		if int64(len(b)) != n.Size {
			n.Hash += fmt.Sprintf("(read %d)", len(b))
		}
	case unix.S_IFLNK:
		buf := make([]byte, 4096)
		k, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return err
		}
		n.Target = string(buf[:k])
	}
	return nil
}

// walk calls visit for every entry below the directory fd (the root
// itself too, as path "" with name "."); visit says whether to descend.
func walk(root int, p string, visit func(dirfd int, name, p string, st *unix.Stat_t) (bool, error)) error {
	var st unix.Stat_t
	if err := unix.Fstatat(root, ".", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if _, err := visit(root, ".", p, &st); err != nil {
		return err
	}
	return walkDir(root, p, visit)
}

func walkDir(dirfd int, p string, visit func(dirfd int, name, p string, st *unix.Stat_t) (bool, error)) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: open: %w", p, err)
	}
	ents, err := readDir(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("%s: readdir: %w", p, err)
	}
	for _, e := range ents {
		cp := join(p, e.name)
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: stat: %w", cp, err)
		}
		down, err := visit(dirfd, e.name, cp, &st)
		if err != nil {
			return err
		}
		if !down {
			continue
		}
		sub, err := unix.Openat(dirfd, e.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("%s: open: %w", cp, err)
		}
		err = walkDir(sub, cp, visit)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// WalkUpper walks an upper directory and normalises the union's markers:
// a char 0/0 device and a ".wh.NAME" file both become a whiteout NAME
// (Type 0); trusted.overlay.opaque=y, user.overlay.opaque=y and a
// ".wh..wh..opq" file all make the directory Opaque.
func WalkUpper(root int) (Tree, error) {
	t := Tree{}
	err := walk(root, "", func(dirfd int, name, p string, st *unix.Stat_t) (bool, error) {
		typ := st.Mode & unix.S_IFMT
		base := p[strings.LastIndex(p, "/")+1:]
		dir := strings.TrimSuffix(p[:len(p)-len(base)], "/")
		switch {
		case p == "":
		case base == ".wh..wh..opq":
			if d := t[dir]; d != nil {
				d.Opaque = true
			}
			return false, nil
		case strings.HasPrefix(base, ".wh."):
			t[join(dir, base[4:])] = &Node{Type: 0}
			return false, nil
		case typ == unix.S_IFCHR && st.Rdev == 0:
			t[p] = &Node{Type: 0}
			return false, nil
		}
		n := &Node{Type: typ, Size: st.Size, Nlink: uint64(st.Nlink)}
		if err := readContent(dirfd, name, n); err != nil {
			return false, fmt.Errorf("upper %s: %w", p, err)
		}
		if typ == unix.S_IFREG {
			// A metacopy file's content is below: its hole says nothing.
			if _, err := unix.Lgetxattr(procPath(dirfd, name), "trusted.overlay.metacopy", nil); err == nil {
				n.Hash, n.Metacopy = "", true
			}
		}
		if typ == unix.S_IFDIR {
			pp := procPath(dirfd, name)
			for _, x := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
				v := make([]byte, 16)
				if k, err := unix.Lgetxattr(pp, x, v); err == nil && string(v[:k]) == "y" {
					n.Opaque = true
				}
			}
		}
		if old := t[p]; old != nil && old.Opaque {
			n.Opaque = true
		}
		t[p] = n
		return typ == unix.S_IFDIR, nil
	})
	return t, err
}

// describeMerged is the comparable form of a merged entry.
func describeMerged(n *Node) string {
	if n == nil {
		return "<absent>"
	}
	s := fmt.Sprintf("%s %04o uid=%d gid=%d", typeName(n.Type), n.Mode, n.Uid, n.Gid)
	if n.Type != unix.S_IFDIR {
		s += fmt.Sprintf(" size=%d nlink=%d", n.Size, n.Nlink)
	}
	if n.Hash != "" {
		s += " sha=" + n.Hash
	}
	if n.Type == unix.S_IFLNK {
		s += " target=" + n.Target
	}
	if len(n.Xattrs) > 0 {
		s += " xattrs=" + strings.Join(n.Xattrs, ",")
	}
	if n.ACL != "" {
		s += " acl=" + n.ACL
	}
	if n.DefACL != "" {
		s += " dacl=" + n.DefACL
	}
	return s
}

func describeUpper(n *Node) string {
	if n == nil {
		return "<absent>"
	}
	if n.Type == 0 {
		return "whiteout"
	}
	s := typeName(n.Type)
	if n.Type == unix.S_IFREG && n.Metacopy {
		s += fmt.Sprintf(" size=%d metacopy", n.Size)
	} else if n.Type == unix.S_IFREG {
		s += fmt.Sprintf(" size=%d sha=%s", n.Size, n.Hash)
	}
	if n.Type == unix.S_IFREG && n.Nlink > 1 {
		s += " hl" // a name of an index inode
	}
	if n.Type == unix.S_IFLNK {
		s += " target=" + n.Target
	}
	if n.Opaque {
		s += " opaque"
	}
	return s
}

// fixedTime reports whether t is one of the fixed times the tester sets
// (lower entries, utimes ops) rather than a time the run produced.
func fixedTime(t int64) bool { return t < 1262304000 } // before 2010

// TreeDiff is one difference between the two trees.
type TreeDiff struct {
	Where   string // "merged", "upper", "ino"
	Path    string
	Kernel  string
	Layerfs string
}

func (d TreeDiff) String() string {
	return fmt.Sprintf("%s %q: kernel: %s; layerfs: %s", d.Where, d.Path, d.Kernel, d.Layerfs)
}

// compareMerged compares two merged trees.
func compareMerged(k, l Tree) []TreeDiff {
	var out []TreeDiff
	for _, p := range unionKeys(k, l) {
		kd, ld := describeMerged(k[p]), describeMerged(l[p])
		if kd != ld {
			out = append(out, TreeDiff{"merged", p, kd, ld})
			continue
		}
		kn, ln := k[p], l[p]
		// Times the run set (now) differ between the sides; fixed ones,
		// from the layers or from utimes, must match. A directory keeps
		// its time when an entry in it is copied up.
		if (fixedTime(kn.Mtime) || fixedTime(ln.Mtime)) && kn.Mtime != ln.Mtime {
			where := "mtime"
			if kn.Type == unix.S_IFDIR {
				where = "dir-mtime"
			}
			out = append(out, TreeDiff{where, p, fmt.Sprint(kn.Mtime), fmt.Sprint(ln.Mtime)})
		}
	}
	return out
}

func compareUpper(k, l Tree) []TreeDiff {
	var out []TreeDiff
	for _, p := range unionKeys(k, l) {
		if p == "" {
			continue
		}
		kd, ld := describeUpper(k[p]), describeUpper(l[p])
		if kd != ld {
			out = append(out, TreeDiff{"upper", p, kd, ld})
		}
	}
	return out
}

func unionKeys(a, b Tree) []string {
	seen := map[string]bool{}
	for k := range a {
		seen[k] = true
	}
	for k := range b {
		seen[k] = true
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// WalkView reads the generator's view of a merged tree: paths, types and
// sizes only.
func WalkView(root int) (*View, error) {
	v := &View{Type: map[string]uint32{}, Size: map[string]int64{}, Xattrs: map[string][]string{},
		Uid: map[string]int{}, Gid: map[string]int{}, Mode: map[string]uint32{}}
	err := walk(root, "", func(dirfd int, name, p string, st *unix.Stat_t) (bool, error) {
		typ := st.Mode & unix.S_IFMT
		v.Uid[p], v.Gid[p], v.Mode[p] = int(st.Uid), int(st.Gid), st.Mode&0o7777
		if p != "" {
			v.Paths = append(v.Paths, p)
			v.Type[p] = typ
			v.Size[p] = st.Size
			{
				xs, _ := userXattrs(procPath(dirfd, name))
				for _, x := range xs {
					k, _, _ := strings.Cut(x, "=")
					v.Xattrs[p] = append(v.Xattrs[p], k)
				}
			}
		}
		return typ == unix.S_IFDIR, nil
	})
	sort.Strings(v.Paths)
	return v, err
}
