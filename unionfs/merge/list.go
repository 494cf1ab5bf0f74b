package merge

import (
	"github.com/layerfs/layerfs/copyup/at"
	"github.com/layerfs/layerfs/whiteout"
	"golang.org/x/sys/unix"
)

// Dirent is one entry of a merged listing: the name, the type and the
// raw inode number of the copy shown, and the layer it is in.
type Dirent struct {
	at.Dirent
	Layer int
}

// List lists the merged directory made of dirs: the top layer's entries
// first, then each lower layer's new names. Whiteouts and markers hide
// names and are never listed; a ".wh.NAME" hides NAME in the layers
// below its own only. A name List gives is one Resolve finds.
func (s *Stack) List(dirs []Dir) ([]Dirent, error) {
	seen := map[string]struct{}{}
	var out []Dirent
	for _, d := range dirs {
		ents, err := at.ReadDir(d.Fd)
		if err != nil {
			return nil, err
		}
		var hides []string
		for _, e := range ents {
			if t, ok := whiteout.Target(e.Name); ok {
				hides = append(hides, t)
				continue
			}
			if whiteout.IsMarkerName(e.Name) {
				continue
			}
			if _, dup := seen[e.Name]; dup {
				continue
			}
			seen[e.Name] = struct{}{}
			if e.Type == unix.DT_CHR || e.Type == unix.DT_UNKNOWN || (e.Type == unix.DT_REG && d.XattrWhiteouts) {
				l := at.Loc{Dir: d.Fd, Name: e.Name}
				var x unix.Statx_t
				if err := at.Statx(l, &x); err != nil {
					continue // vanished
				}
				if whiteout.IsWhiteout(l, d.Opacity, &x) {
					continue
				}
				e.Type = uint8(x.Mode>>12) & 0xf
			}
			out = append(out, Dirent{Dirent: e, Layer: d.Layer})
		}
		for _, h := range hides {
			seen[h] = struct{}{}
		}
	}
	return out, nil
}
