package layout

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MountInfo is one mount as /proc/self/mountinfo lists it.
type MountInfo struct {
	Mountpoint string
	FSType     string // "overlay", "fuse.layerfs", ...
	Source     string
	Options    []string // per-superblock options, unescaped
}

// ReadMountInfo lists the mounts this process sees, in mountinfo's order
// (a mount stacked on another comes after it).
func ReadMountInfo() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseMountInfo(f)
}

// parseMountInfo reads mountinfo lines: "ID PARENT MAJ:MIN ROOT POINT
// OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func parseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
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
// "lowerdir+=" forms), upper and work dir, as the mount was given them.
func (m *MountInfo) OverlayDirs() Layers {
	var l Layers
	for _, o := range m.Options {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir":
			l.Lowers = append(l.Lowers, splitLowerdir(v)...)
		case "lowerdir+":
			l.Lowers = append(l.Lowers, v)
		case "upperdir":
			l.Upper = v
		case "workdir":
			l.Work = v
		}
	}
	return l
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
