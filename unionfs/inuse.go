package unionfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MountInfo is one mount as /proc/self/mountinfo lists it.
type MountInfo struct {
	Mountpoint string
	FSType     string // "overlay", "fuse.layerfs", ...
	Source     string
	Options    []string // per-superblock options, unescaped
}

// ReadMountInfo lists the mounts this process sees.
func ReadMountInfo() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		m := MountInfo{
			Mountpoint: unescapeOctal(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescapeOctal(fields[sep+2]),
		}
		for _, o := range strings.Split(fields[sep+3], ",") {
			m.Options = append(m.Options, unescapeOctal(o))
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescapeOctal undoes the kernel's \ooo escapes in mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FindMount returns the mount whose mount point is path (the top one
// where several are stacked).
func FindMount(path string) (*MountInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	ms, err := ReadMountInfo()
	if err != nil {
		return nil, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint == abs {
			return &ms[i], nil
		}
	}
	return nil, fmt.Errorf("%s is not a mount point", path)
}

// OverlayDirs reads the layer directories of a kernel overlay mount from
// its options: lowers top first (both the "lowerdir=A:B" and the repeated
// "lowerdir+=" forms), upper and work dir.
func (m *MountInfo) OverlayDirs() (lowers []string, upper, work string) {
	for _, o := range m.Options {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			lowers = append(lowers, splitLowerdir(v)...)
		case "lowerdir+":
			lowers = append(lowers, v)
		case "upperdir":
			upper = v
		case "workdir":
			work = v
		}
	}
	return lowers, upper, work
}

// splitLowerdir splits "A:B" at colons not escaped as "\:".
func splitLowerdir(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v):
			i++
			cur.WriteByte(v[i])
		case v[i] == ':':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(v[i])
		}
	}
	return append(out, cur.String())
}

// InUse says whether a live union uses upper or work: a kernel overlay
// or layerfs mount naming either (in this mount namespace), or a layerfs
// server holding the work dir's lock (in any). Offline tools that change
// layer dirs refuse while one does.
func InUse(upper, work string) (string, bool) {
	same := func(a, b string) bool {
		var sa, sb unix.Stat_t
		return a != "" && b != "" && unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
	}
	if ms, err := ReadMountInfo(); err == nil {
		for _, m := range ms {
			var u, w, what string
			switch m.FSType {
			case "overlay":
				_, u, w = m.OverlayDirs()
				what = "kernel overlay"
			case "fuse.layerfs":
				d, err := Describe(m.Mountpoint)
				if err != nil {
					continue
				}
				u, w, what = d.UpperDir, d.WorkDir, "layerfs"
			default:
				continue
			}
			if same(u, upper) || same(w, work) || same(u, work) || same(w, upper) {
				return what + " mounted at " + m.Mountpoint, true
			}
		}
	}
	if work != "" {
		fd, err := unix.Open(work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			defer unix.Close(fd)
			if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == unix.EWOULDBLOCK {
				return "a layerfs server (it holds the lock on " + work + ")", true
			}
			unix.Flock(fd, unix.LOCK_UN)
		}
	}
	return "", false
}
