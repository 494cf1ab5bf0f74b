// Package fsck checks, repairs and vacuums the layer directories of a
// union offline: what `layerfs check` and `layerfs vacuum` do.
//
// Check walks the work dir, the upper dir and every lower dir and reports
// what a union would misread or carry for nothing: stale work entries,
// whiteouts that hide nothing, contradicting markers, broken origin and
// redirect records. Repair fixes only what it can prove does not change
// the merged view, and only in the upper and work dirs: lower layers are
// read, never written.
//
// Vacuum removes upper copies that are identical to what the lowers show
// at the same path, again only where the merged view cannot change.
//
// Both refuse to change anything while a live union (kernel overlay or a
// layerfs server) uses the directories: see layout.InUse.
package fsck

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/layerfs/layerfs/unionfs/stack"
	"golang.org/x/sys/unix"
)

// Kind names a class of finding (stable, for scripts and --json).
type Kind string

const (
	StaleWork         Kind = "stale-work"        // entry left in W/work by a crash
	VolatileDirty     Kind = "volatile-dirty"    // W/work/incompat/volatile: a volatile mount did not end cleanly
	IncompatWork      Kind = "incompat-work"     // another W/work/incompat entry: the kernel will not mount
	WorkCrossDevice   Kind = "work-cross-device" // work dir not on the upper's filesystem
	WhiteoutUseless   Kind = "whiteout-hides-nothing"
	WhiteoutDuplicate Kind = "whiteout-duplicate"     // char (or xattr) whiteout and .wh.NAME for one name
	WhiteoutConflict  Kind = "whiteout-contradiction" // .wh.NAME next to a real NAME
	BadMarker         Kind = "bad-marker"             // a .wh. marker that is not an empty regular file
	ReservedName      Kind = "reserved-name"          // a .wh.* name that is no marker
	BadOrigin         Kind = "bad-origin"
	BadRedirect       Kind = "bad-redirect"      // malformed redirect value
	DanglingRedirect  Kind = "dangling-redirect" // redirect to nothing in the layers below
	MisplacedRedirect Kind = "misplaced-redirect"
	BadOpaque         Kind = "bad-opaque"
	LowerMismatch     Kind = "lower-mismatch" // the upper root's origin names another top lower dir
)

// Finding is one problem, at one host path.
type Finding struct {
	Path    string `json:"path"`
	Layer   string `json:"layer"` // "upper", "lower1" (top lower), ..., "work"
	Kind    Kind   `json:"kind"`
	Problem string `json:"problem"`
	// Repair says what --repair does about it; Unfixable why it does
	// nothing (one of the two is set).
	Repair    string `json:"repair,omitempty"`
	Unfixable string `json:"unfixable,omitempty"`
	Fixed     bool   `json:"fixed"`
	FixError  string `json:"fix_error,omitempty"`

	fix func() error
}

// Note is information that is not a problem (the exit code ignores it).
type Note struct {
	Path string `json:"path"`
	Text string `json:"note"`
}

// Report is what Check found, and with Repair, what it fixed.
type Report struct {
	Findings []*Finding `json:"findings"`
	Notes    []Note     `json:"notes"`
	// Errors are parts of the layers that could not be checked.
	Errors   []string `json:"errors"`
	Entries  int64    `json:"entries"`
	Repaired bool     `json:"repaired"`
}

// ExitCode is the fsck(8) status of r; as with fsck the conditions add
// up: 1 problems were corrected, 4 problems are left, 8 part of the
// layers could not be checked.
func (r *Report) ExitCode() int {
	code := 0
	for _, f := range r.Findings {
		if f.Fixed {
			code |= 1
		} else {
			code |= 4
		}
	}
	if len(r.Errors) > 0 {
		code |= 8
	}
	return code
}

// Options tune Check.
type Options struct {
	// Repair fixes what can be fixed without changing the merged view,
	// in the upper and work dirs only.
	Repair bool
	// Force lets Repair also remove W/work/incompat, which a volatile
	// mount leaves behind when it did not end cleanly.
	Force bool
	// Progress, when set, is called once per entry looked at.
	Progress func(bytes int64)
}

// Check checks the layers. The error is for what stops the check from
// starting (a layer that is no directory, a live union when repairing);
// problems met on the way are in the report.
func Check(l layout.Layers, opt Options) (*Report, error) {
	l, err := resolve(l)
	if err != nil {
		return nil, err
	}
	if l.Upper != "" && len(l.Lowers) == 0 {
		// Every whiteout would seem to hide nothing.
		return nil, errors.New("an upper dir is only checked with its lower dirs")
	}
	if opt.Repair {
		unlock, err := lock(l)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	c := &checker{opt: opt, rep: &Report{}}
	if l.Work != "" {
		c.checkWork(l)
	}
	if l.Upper != "" {
		frozen := ""
		if c.checkUpperOrigin(l) {
			frozen = "the lower dirs given may not be the upper's: nothing is judged safe to change"
		}
		c.checkLayer(stackFrom(append([]string{l.Upper}, l.Lowers...)), "upper", frozen)
	}
	for i := range l.Lowers {
		c.checkLayer(stackFrom(l.Lowers[i:]), fmt.Sprintf("lower%d", i+1), "lower layers are never changed")
	}
	if opt.Repair {
		c.repair()
	}
	return c.rep, nil
}

type checker struct {
	opt Options
	rep *Report
}

// layer is the layer being checked: the top one of s.
type layer struct {
	s    *stack.Stack
	name string
	// frozen says why no fix may be offered in this layer ("" for the
	// upper and work dirs, which may be repaired).
	frozen string
}

func (c *checker) errorf(format string, args ...any) {
	c.rep.Errors = append(c.rep.Errors, fmt.Sprintf(format, args...))
}

func (c *checker) note(path, text string) {
	c.rep.Notes = append(c.rep.Notes, Note{Path: path, Text: text})
}

func (c *checker) count(bytes int64) {
	c.rep.Entries++
	if c.opt.Progress != nil {
		c.opt.Progress(bytes)
	}
}

// add records a finding. A fix is only kept for a layer that is not
// frozen: lower layers are never changed, whatever a caller passes.
func (c *checker) add(ly *layer, path string, kind Kind, problem string, fx fixer) {
	f := &Finding{Path: path, Layer: ly.name, Kind: kind, Problem: problem}
	switch {
	case ly.frozen != "":
		f.Unfixable = ly.frozen
	case fx.fix == nil:
		f.Unfixable = fx.why
	default:
		f.Repair, f.fix = fx.what, fx.fix
	}
	c.rep.Findings = append(c.rep.Findings, f)
}

// fixer is a finding's repair: what it does and how, or why there is none.
type fixer struct {
	what string
	fix  func() error
	why  string
}

func fixBy(what string, fix func() error) fixer { return fixer{what: what, fix: fix} }
func noFix(why string) fixer                    { return fixer{why: why} }

// repair applies the fixes, in the order the findings were made. Each fix
// was decided on the layers as found, and none changes which lower
// directories merge under an upper one, so every other judgement still
// holds when its turn comes.
func (c *checker) repair() {
	c.rep.Repaired = true
	for _, f := range c.rep.Findings {
		if f.fix == nil {
			continue
		}
		if err := f.fix(); err != nil {
			f.FixError = err.Error()
			continue
		}
		f.Fixed = true
	}
}

// checkLayer walks every directory of the top layer of s.
func (c *checker) checkLayer(s *stack.Stack, name, frozen string) {
	ly := &layer{s: s, name: name, frozen: frozen}
	root, err := s.Root()
	if err != nil {
		c.errorf("%v", err)
		return
	}
	c.count(root.Stat.Size)
	c.checkXattrs(ly, s.Layers[0], &root.Stat)
	c.checkRootOpacity(ly, s.Layers[0])
	c.walkDir(ly, root)
}

// walkDir checks the entries of dir (whose Dirs[0] is the checked
// layer's own directory), then descends into its subdirectories.
func (c *checker) walkDir(ly *layer, dir *stack.Entry) {
	host := ly.s.Real(dir.Dirs[0])
	names, err := readNames(host)
	if err != nil {
		c.errorf("%s: %v", host, err)
		return
	}
	d := &dirScan{ly: ly, dir: dir, host: host, real: map[string]*unix.Stat_t{}, kernelWh: map[string]bool{}, fileWh: map[string]*unix.Stat_t{}}
	var subdirs []string
	for _, n := range names {
		st := new(unix.Stat_t)
		if err := unix.Lstat(filepath.Join(host, n), st); err != nil {
			c.errorf("%s: %v", filepath.Join(host, n), err)
			continue
		}
		c.count(st.Size)
		if c.scanName(d, n, st) && isDir(st) {
			subdirs = append(subdirs, n)
		}
	}
	c.checkMarkers(d)
	for _, n := range subdirs {
		child, err := ly.s.Child(dir, n)
		if err != nil {
			c.errorf("%s: %v", filepath.Join(host, n), err)
			continue
		}
		if len(child.Dirs) == 0 || child.Dirs[0].Layer != 0 {
			// Cannot happen for a directory of the top layer; do not
			// guess if it does.
			c.errorf("%s: not resolved as a directory of its layer", filepath.Join(host, n))
			continue
		}
		c.checkDirXattrs(ly, dir, n, child)
		c.walkDir(ly, child)
	}
}
