// Package difftest is a differential tester: it builds a random stack of
// lower layers, mounts it twice — once with kernel overlayfs, once with
// layerfs — applies the same random operations to both and reports every
// place where layerfs answers or ends up differently from the kernel.
//
// The stack is described once, neutrally (Stack), and materialised twice:
// for the kernel every whiteout is a char 0/0 device and every opaque
// directory has trusted.overlay.opaque=y; for layerfs each marker is written
// in the form its Entry names (char device or ".wh.NAME" file; opaque
// xattr, user.overlay.opaque or ".wh..wh..opq" file).
package difftest

import (
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Kind is the type of a stack entry.
type Kind string

const (
	KFile     Kind = "file"
	KDir      Kind = "dir"
	KSymlink  Kind = "symlink"
	KHardlink Kind = "hardlink" // Target names a file of the same layer
	KFifo     Kind = "fifo"
	KWhiteout Kind = "whiteout"
)

// Entry is one entry of one lower layer.
type Entry struct {
	Layer  int // 1 is the top lower layer
	Kind   Kind
	Path   string
	Mode   uint32 // permission bits (with suid/sgid/sticky)
	Uid    int
	Gid    int
	Size   int64
	Pat    int  // content pattern
	Sparse bool // only the last 16 bytes of Size are data
	Target string
	Xattrs []string // "user.NAME=VALUE", sorted
	// ACL and DefACL (files and dirs; DefACL dirs only): POSIX ACLs in
	// text form (acl.go), "" for none. An ACL sets the mode's group bits
	// from its mask, as setfacl does.
	ACL, DefACL string
	// Opaque (directories): "" not opaque, else the form layerfs gets:
	// "xattr" (trusted.overlay.opaque), "user" (user.overlay.opaque) or
	// "wh" (.wh..wh..opq). The kernel always gets trusted.overlay.opaque.
	Opaque string
	// Form (whiteouts): "chr" (char 0/0) or "wh" (.wh.NAME) for layerfs.
	// The kernel always gets a char 0/0 device.
	Form string
}

// Stack is the neutral description of the lower layers.
type Stack struct {
	Layers  int
	Entries []Entry
	// Root, when set, gives the upper dir's mode and owners, which are
	// the merged root's ("root mode=1777 uid=0 gid=0"); else 0755 root.
	Root *Entry
}

// rootAttrs are the merged roots the generator picks from: where other
// users may create too.
var rootAttrs = []Entry{
	{Mode: 0o755}, {Mode: 0o1777}, {Mode: 0o1777}, {Mode: 0o777},
	{Mode: 0o2775, Gid: 1000}, {Mode: 0o775, Uid: 1000, Gid: 1000}, {Mode: 0o3777, Gid: 1001},
}

// baseTime is the epoch (2000-01-01) of the fixed times given to lower
// entries, so that times of untouched entries compare exactly.
const baseTime = 946684800

// mtimeOf is the fixed modification time of a lower entry.
func mtimeOf(layer int, p string) int64 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%s", layer, p)
	return baseTime + int64(h.Sum32()%1000000)
}

// Content returns the data of a file of size n with pattern pat: the byte
// at offset i is a function of (pat, i), so every range is reproducible.
func Content(pat int, off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint64(off+int64(i))*2654435761 + uint64(pat)*40503
		b[i] = 'a' + byte((x>>7)%26)
	}
	return b
}

var (
	namePool  = []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	fileModes = []uint32{0o644, 0o644, 0o600, 0o755, 0o444, 0o640, 0o4755, 0o2755, 0o664, 0o660, 0o6775, 0o2644, 0o000}
	dirModes  = []uint32{0o755, 0o755, 0o700, 0o775, 0o1777, 0o2775, 0o777, 0o3777, 0o2770, 0o1770}
	ids       = []int{0, 0, 1000, 1001, 1002}
	xattrKeys = []string{"user.a", "user.b", "user.c", "trusted.t", "security.s"}
)

// Hardlinks enables hard links in generated stacks and link ops.
var Hardlinks = true

// GenStack makes a random stack of 2-4 lower layers.
func GenStack(rng *rand.Rand) *Stack {
	g := &stackGen{rng: rng, below: map[string]Kind{}, ever: map[string]map[string]bool{}}
	g.s.Layers = 2 + rng.IntN(3)
	if Credentials {
		r := rootAttrs[rng.IntN(len(rootAttrs))]
		g.s.Root = &Entry{Kind: KDir, Mode: r.Mode, Uid: r.Uid, Gid: r.Gid}
	}
	for layer := g.s.Layers; layer >= 1; layer-- {
		g.layer = layer
		g.files = nil
		g.genDir("", 0, true)
	}
	return &g.s
}

type stackGen struct {
	rng   *rand.Rand
	s     Stack
	layer int
	// below is the merged view of the layers generated so far.
	below map[string]Kind
	// ever: names used in any layer, per directory.
	ever  map[string]map[string]bool
	files []string // regular files of the current layer (link sources)
}

func (g *stackGen) pick(n int) int { return g.rng.IntN(n) }

func (g *stackGen) add(e Entry) {
	e.Layer = g.layer
	g.s.Entries = append(g.s.Entries, e)
	dir, name := path.Split(e.Path)
	dir = strings.TrimSuffix(dir, "/")
	if g.ever[dir] == nil {
		g.ever[dir] = map[string]bool{}
	}
	g.ever[dir][name] = true
	// Update the merged view below the next layer.
	switch {
	case e.Kind == KWhiteout:
		g.delTree(e.Path, true)
	case e.Kind == KDir:
		if k, ok := g.below[e.Path]; ok && k != KDir {
			g.delTree(e.Path, true)
		}
		if e.Opaque != "" {
			g.delTree(e.Path, false)
		}
		g.below[e.Path] = KDir
	default:
		g.delTree(e.Path, true)
		k := e.Kind
		if k == KHardlink {
			k = KFile
		}
		g.below[e.Path] = k
	}
}

func (g *stackGen) delTree(p string, self bool) {
	if self {
		delete(g.below, p)
	}
	for k := range g.below {
		if strings.HasPrefix(k, p+"/") {
			delete(g.below, k)
		}
	}
}

func (g *stackGen) attrs(e *Entry) {
	e.Uid = ids[g.pick(len(ids))]
	e.Gid = ids[g.pick(len(ids))]
	if e.Kind == KFile || e.Kind == KDir {
		for _, k := range xattrKeys {
			if g.pick(5) == 0 {
				e.Xattrs = append(e.Xattrs, k+"=v"+strconv.Itoa(g.pick(100)))
			}
		}
		if e.Kind == KFile && g.pick(12) == 0 {
			e.Xattrs = append(e.Xattrs, "security.capability=0x"+hex.EncodeToString(fileCaps))
		}
		if Credentials && g.pick(5) == 0 {
			e.ACL = genACL(g.rng, int(e.Mode))
			if !strings.Contains(e.ACL, "m::") && strings.Count(e.ACL, ",") > 2 {
				e.ACL = "" // a layer holds only ACLs the kernel takes
			}
		}
		if Credentials && e.Kind == KDir && g.pick(4) == 0 {
			if e.DefACL = genACL(g.rng, -1); !strings.Contains(e.DefACL, "m::") && strings.Count(e.DefACL, ",") > 2 {
				e.DefACL = ""
			}
		}
	}
}

// genDir fills directory dir of the current layer. merged tells whether it
// merges with a directory of a layer below: only there are whiteouts
// generated, as the kernel lists the whiteouts of a directory it does not
// merge (a kernel quirk; such layers are not made by real tools).
func (g *stackGen) genDir(dir string, depth int, merged bool) {
	n := g.pick(5)
	if dir == "" {
		n += 3
	}
	names := append([]string(nil), namePool...)
	g.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	if n > len(names) {
		n = len(names)
	}
	if Credentials && n > 0 && g.pick(10) == 0 {
		// A name of the longest lengths (not 256: no layer has it).
		names[0] = longNames[g.pick(len(longNames)-1)]
	}
	for _, name := range names[:n] {
		p := name
		if dir != "" {
			p = dir + "/" + name
		}
		bk, inBelow := g.below[p]
		var kind Kind
		r := g.pick(100)
		switch {
		case inBelow && r < 30:
			kind = KWhiteout
		case inBelow && bk == KDir && r < 70 && depth < 3:
			kind = KDir
		default:
			kind = g.randomKind(depth, merged)
		}
		e := Entry{Kind: kind, Path: p}
		switch kind {
		case KFile:
			e.Mode = fileModes[g.pick(len(fileModes))]
			switch r := g.pick(10); {
			case r == 0:
				e.Size = 0
			case r < 8:
				e.Size = 1 + int64(g.pick(300))
			case r == 8:
				e.Size = 4096 + int64(g.pick(60000))
			default:
				e.Size, e.Sparse = 100000+int64(g.pick(2000000)), true
			}
			e.Pat = g.pick(1000)
			g.attrs(&e)
			g.add(e)
			g.files = append(g.files, p)
		case KHardlink:
			e.Target = g.files[g.pick(len(g.files))]
			g.add(e)
		case KDir:
			e.Mode = dirModes[g.pick(len(dirModes))]
			if g.pick(100) < 15 || (inBelow && bk == KDir && g.pick(100) < 20) {
				e.Opaque = []string{"xattr", "user", "wh"}[g.pick(3)]
			}
			g.attrs(&e)
			g.add(e)
			g.genDir(p, depth+1, inBelow && bk == KDir && e.Opaque == "")
		case KSymlink:
			e.Target = symlinkTargets[g.pick(len(symlinkTargets))]
			g.attrs(&e)
			g.add(e)
		case KFifo:
			e.Mode = 0o644
			g.attrs(&e)
			g.add(e)
		case KWhiteout:
			e.Form = []string{"chr", "wh"}[g.pick(2)]
			if len(name)+len(".wh.") > 255 {
				e.Form = "chr" // no room for the OCI form
			}
			g.add(e)
		}
	}
}

var symlinkTargets = []string{"a", "b", "../c", "d/e", "/nonexistent/x", ".", "..", "f/../../g"}

func (g *stackGen) randomKind(depth int, merged bool) Kind {
	for {
		r := g.pick(100)
		switch {
		case r < 40:
			return KFile
		case r < 63:
			if depth < 3 {
				return KDir
			}
		case r < 75:
			return KSymlink
		case r < 81:
			return KFifo
		case r < 92:
			if len(g.files) > 0 && Hardlinks {
				return KHardlink
			}
		default:
			if merged {
				return KWhiteout
			}
		}
	}
}

// String writes the stack one entry a line, e.g.
//
//	L2 file a mode=0644 uid=0 gid=0 size=10 pat=3 x=user.a=v1
//	L1 whiteout a form=wh
func (s *Stack) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "layers=%d\n", s.Layers)
	if r := s.Root; r != nil {
		fmt.Fprintf(&b, "root mode=%04o uid=%d gid=%d\n", r.Mode, r.Uid, r.Gid)
	}
	for _, e := range s.Entries {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func (e Entry) String() string {
	f := []string{fmt.Sprintf("L%d", e.Layer), string(e.Kind), e.Path}
	switch e.Kind {
	case KFile:
		f = append(f, fmt.Sprintf("mode=%04o uid=%d gid=%d size=%d pat=%d", e.Mode, e.Uid, e.Gid, e.Size, e.Pat))
		if e.Sparse {
			f = append(f, "sparse")
		}
	case KDir:
		f = append(f, fmt.Sprintf("mode=%04o uid=%d gid=%d", e.Mode, e.Uid, e.Gid))
		if e.Opaque != "" {
			f = append(f, "opaque="+e.Opaque)
		}
	case KSymlink:
		f = append(f, "target="+e.Target, fmt.Sprintf("uid=%d gid=%d", e.Uid, e.Gid))
	case KHardlink:
		f = append(f, "target="+e.Target)
	case KFifo:
		f = append(f, fmt.Sprintf("mode=%04o uid=%d gid=%d", e.Mode, e.Uid, e.Gid))
	case KWhiteout:
		f = append(f, "form="+e.Form)
	}
	for _, x := range e.Xattrs {
		f = append(f, "x="+x)
	}
	if e.ACL != "" {
		f = append(f, "acl="+e.ACL)
	}
	if e.DefACL != "" {
		f = append(f, "dacl="+e.DefACL)
	}
	return strings.Join(f, " ")
}

// ParseStack reads the String form back.
func ParseStack(text string) (*Stack, error) {
	s := &Stack{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if v, ok := strings.CutPrefix(line, "layers="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("stack: %q: %v", line, err)
			}
			s.Layers = n
			continue
		}
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "root" {
			r := Entry{Kind: KDir}
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				err := fmt.Errorf("unknown key %q", k)
				if k == "mode" || k == "uid" || k == "gid" {
					err = r.set(k, v)
				}
				if err != nil {
					return nil, fmt.Errorf("stack: %q: %v", line, err)
				}
			}
			s.Root = &r
			continue
		}
		if len(f) < 3 || !strings.HasPrefix(f[0], "L") {
			return nil, fmt.Errorf("stack: bad line %q", line)
		}
		var e Entry
		var err error
		if e.Layer, err = strconv.Atoi(f[0][1:]); err != nil {
			return nil, fmt.Errorf("stack: bad layer in %q", line)
		}
		e.Kind, e.Path = Kind(f[1]), f[2]
		for _, kv := range f[3:] {
			k, v, _ := strings.Cut(kv, "=")
			if err := e.set(k, v); err != nil {
				return nil, fmt.Errorf("stack: %q: %v", line, err)
			}
		}
		if e.Layer > s.Layers {
			s.Layers = e.Layer
		}
		s.Entries = append(s.Entries, e)
	}
	return s, nil
}

// set sets the field an entry line's key=value item names.
func (e *Entry) set(k, v string) error {
	var err error
	var n int64
	switch k {
	case "mode":
		n, err = strconv.ParseInt(v, 8, 32)
		e.Mode = uint32(n)
	case "uid":
		e.Uid, err = strconv.Atoi(v)
	case "gid":
		e.Gid, err = strconv.Atoi(v)
	case "size":
		e.Size, err = strconv.ParseInt(v, 10, 64)
	case "pat":
		e.Pat, err = strconv.Atoi(v)
	case "sparse":
		e.Sparse = true
	case "target":
		e.Target = v
	case "opaque":
		e.Opaque = v
	case "form":
		e.Form = v
	case "x":
		e.Xattrs = append(e.Xattrs, v)
	case "acl":
		e.ACL = v
	case "dacl":
		e.DefACL = v
	default:
		err = fmt.Errorf("unknown key %q", k)
	}
	return err
}

// without returns the stack less entry i and everything that depends on it
// (entries below a removed directory, hard links to a removed file).
func (s *Stack) without(i int) *Stack {
	drop := s.Entries[i]
	out := &Stack{Layers: s.Layers, Root: s.Root}
	for j, e := range s.Entries {
		if j == i {
			continue
		}
		if e.Layer == drop.Layer && strings.HasPrefix(e.Path, drop.Path+"/") {
			continue
		}
		if e.Layer == drop.Layer && e.Kind == KHardlink && (e.Target == drop.Path || strings.HasPrefix(e.Target, drop.Path+"/")) {
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

// names returns every name used at directory dir in any layer.
func (s *Stack) names(dir string) []string {
	seen := map[string]bool{}
	for _, e := range s.Entries {
		d, n := path.Split(e.Path)
		if strings.TrimSuffix(d, "/") == dir {
			seen[n] = true
		}
	}
	var out []string
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Materialise writes layer i of the stack to dirs[i-1]. kernel selects the
// kernel's marker forms.
func (s *Stack) Materialise(dirs []string, kernel bool) error {
	type timed struct {
		p     string
		mtime int64
	}
	var times []timed
	for _, e := range s.Entries {
		root := dirs[e.Layer-1]
		p := filepath.Join(root, e.Path)
		var err error
		switch e.Kind {
		case KFile:
			err = writeLowerFile(p, e)
		case KDir:
			err = unix.Mkdir(p, 0o700)
		case KSymlink:
			err = unix.Symlink(e.Target, p)
		case KHardlink:
			err = unix.Link(filepath.Join(root, e.Target), p)
		case KFifo:
			err = unix.Mknod(p, unix.S_IFIFO|0o600, 0)
		case KWhiteout:
			if kernel || e.Form != "wh" {
				err = unix.Mknod(p, unix.S_IFCHR, 0)
			} else {
				dir, name := filepath.Split(p)
				err = os.WriteFile(filepath.Join(dir, ".wh."+name), nil, 0o644)
			}
		default:
			err = fmt.Errorf("unknown kind %q", e.Kind)
		}
		if err != nil {
			return fmt.Errorf("materialise %s: %w", e, err)
		}
		if e.Kind == KWhiteout || e.Kind == KHardlink {
			continue
		}
		if err := unix.Lchown(p, e.Uid, e.Gid); err != nil {
			return fmt.Errorf("materialise %s: %w", e, err)
		}
		if e.Kind != KSymlink {
			if err := unix.Chmod(p, e.Mode); err != nil {
				return fmt.Errorf("materialise %s: %w", e, err)
			}
		}
		for _, x := range e.Xattrs {
			k, v, _ := strings.Cut(x, "=")
			b := []byte(v)
			if h, ok := strings.CutPrefix(v, "0x"); ok {
				if b, err = hex.DecodeString(h); err != nil {
					return fmt.Errorf("materialise %s: %w", e, err)
				}
			}
			if err := unix.Lsetxattr(p, k, b, 0); err != nil {
				return fmt.Errorf("materialise %s: %w", e, err)
			}
		}
		for _, a := range [][2]string{{xattrACL, e.ACL}, {xattrDefACL, e.DefACL}} {
			if a[1] == "" {
				continue
			}
			b, err := aclBinary(a[1])
			if err == nil {
				err = unix.Lsetxattr(p, a[0], b, 0)
			}
			if err != nil {
				return fmt.Errorf("materialise %s: %s: %w", e, a[0], err)
			}
		}
		if e.Opaque != "" {
			switch {
			case kernel || e.Opaque == "xattr":
				err = unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)
			case e.Opaque == "user":
				err = unix.Setxattr(p, "user.overlay.opaque", []byte("y"), 0)
			default:
				err = os.WriteFile(filepath.Join(p, ".wh..wh..opq"), nil, 0o644)
			}
			if err != nil {
				return fmt.Errorf("materialise %s: %w", e, err)
			}
		}
		times = append(times, timed{p, mtimeOf(e.Layer, e.Path)})
	}
	// Children first, so that setting a time is the last change of a dir.
	for i := len(times) - 1; i >= 0; i-- {
		t := unix.NsecToTimespec(times[i].mtime * 1e9)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, times[i].p, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("materialise times %s: %w", times[i].p, err)
		}
	}
	for _, d := range dirs {
		t := unix.NsecToTimespec(baseTime * 1e9)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, d, []unix.Timespec{t, t}, 0); err != nil {
			return err
		}
	}
	return nil
}

func writeLowerFile(p string, e Entry) error {
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if e.Sparse {
		if err := unix.Ftruncate(fd, e.Size); err != nil {
			return err
		}
		_, err = unix.Pwrite(fd, Content(e.Pat, e.Size-16, 16), e.Size-16)
		return err
	}
	if e.Size > 0 {
		_, err = unix.Pwrite(fd, Content(e.Pat, 0, e.Size), 0)
	}
	return err
}
