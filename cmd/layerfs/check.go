package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/layerfs/layerfs/unionfs"
	"github.com/layerfs/layerfs/unionfs/fsck"
	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
)

func init() {
	subcommands["check"] = runCheck
}

// Exit codes the offline layer tools share with fsck(8) (check's other
// codes come from fsck.Report.ExitCode).
const (
	fsckExitOperational = 8
	fsckExitUsage       = 16
)

const checkUsage = `layerfs check: find, and with --repair fix, problems in a union's layer dirs

Usage:
  layerfs check [--repair [--force]] [--json] -o lowerdir=L1:L2,upperdir=U,workdir=W
  layerfs check [--repair [--force]] [--json] --lower L1 --lower L2 --upper U --work W

Run it on an unmounted union. It reports, one per line as "path: problem":
stale entries in W/work, a volatile mount that did not end cleanly,
whiteouts that hide nothing, two whiteout forms for one name, a ".wh.NAME"
beside a real NAME, marker files that are not empty files, names reserved
for markers, malformed or dangling redirect xattrs, broken origin records
and misplaced opaque markers (trusted.overlay.* and user.overlay.*).

--repair fixes what it can without changing the merged view, in the upper
and work dirs only; lower dirs are never written. It refuses while a kernel
overlay mount or a layerfs server uses the dirs. W/work/incompat (left by a
volatile mount) is only removed with --force. Without workdir the work dir
is not checked; without upperdir only the lower dirs are. Other -o options
are accepted and ignored.

Exit status (as fsck; the conditions add up):
  0   no problems
  1   problems found, all fixed
  4   problems left unfixed
  8   operational error: a layer could not be read, or --repair on a union in use
  16  usage error

Examples:
  layerfs check -o lowerdir=/img/l1:/img/l2,upperdir=/c/upper,workdir=/c/work
  layerfs check --repair --lower /img/l1 --upper /c/upper --work /c/work
  layerfs check --json -o lowerdir=/img/l1,upperdir=/c/upper,workdir=/c/work

Flags:
`

// fsckLayerFlags are the layer arguments the offline tools share with the
// mount command: -o in fuse-overlayfs syntax and the friendly flags.
type fsckLayerFlags struct {
	opts   []string
	lowers []string
	upper  string
	work   string
}

func (lf *fsckLayerFlags) register(fl *flag.FlagSet) {
	fl.StringArrayVarP(&lf.opts, "options", "o", nil, "lowerdir=L1:L2,upperdir=U,workdir=W (mount syntax; may repeat)")
	fl.StringArrayVar(&lf.lowers, "lower", nil, "lower directory (repeat; top first)")
	fl.StringVar(&lf.upper, "upper", "", "upper directory")
	fl.StringVar(&lf.work, "work", "", "work directory")
}

// layers parses the -o strings (only lowerdir, upperdir and workdir
// matter offline; a mount's other options are ignored) and adds the
// flags.
func (lf *fsckLayerFlags) layers() (layout.Layers, error) {
	var o unionfs.Options
	for _, s := range lf.opts {
		for _, item := range splitKeepingEscapes(s, ',') {
			key, _, _ := strings.Cut(item, "=")
			if key != "lowerdir" && key != "upperdir" && key != "workdir" {
				continue
			}
			if _, err := parseMountOptions(item, &o); err != nil {
				return layout.Layers{}, err
			}
		}
	}
	l := layout.Layers{Lowers: append(o.Lowers, lf.lowers...), Upper: o.Upper, Work: o.Work}
	if lf.upper != "" {
		l.Upper = lf.upper
	}
	if lf.work != "" {
		l.Work = lf.work
	}
	if len(l.Lowers) == 0 && l.Upper == "" {
		return l, errors.New("no layers given: -o lowerdir=L1:L2,upperdir=U,workdir=W or --lower/--upper/--work")
	}
	if len(l.Lowers) == 0 {
		return l, errors.New("an upper dir needs its lower dirs (lowerdir=L1:L2 or --lower), the same as when mounted")
	}
	return l, nil
}

// parseFsckFlags parses a tool's flags; shown reports that --help was asked
// for and printed. Errors are for fsckUsageError to print in one line.
func parseFsckFlags(fl *flag.FlagSet, usage string, args []string) (shown bool, err error) {
	fl.SetOutput(io.Discard) // errors are reported in one line by the caller
	fl.Usage = func() {}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stdout, usage)
			fl.SetOutput(os.Stdout)
			fl.PrintDefaults()
			return true, nil
		}
		return false, err
	}
	if fl.NArg() > 0 {
		return false, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	return false, nil
}

func fsckUsageError(tool string, err error) int {
	fmt.Fprintf(os.Stderr, "layerfs %s: %v (see layerfs %s --help)\n", tool, err, tool)
	return fsckExitUsage
}

type checkArgs struct {
	layers         layout.Layers
	repair, force  bool
	json           bool
	helpWasPrinted bool
}

func parseCheckArgs(args []string) (*checkArgs, error) {
	fl := flag.NewFlagSet("layerfs check", flag.ContinueOnError)
	var lf fsckLayerFlags
	var c checkArgs
	lf.register(fl)
	fl.BoolVar(&c.repair, "repair", false, "fix what can be fixed safely (upper and work dir only)")
	fl.BoolVar(&c.force, "force", false, "with --repair: also remove W/work/incompat left by a volatile mount")
	fl.BoolVar(&c.json, "json", false, "print the report as JSON")
	shown, err := parseFsckFlags(fl, checkUsage, args)
	if shown || err != nil {
		c.helpWasPrinted = shown
		return &c, err
	}
	if c.force && !c.repair {
		return nil, errors.New("--force only goes with --repair")
	}
	c.layers, err = lf.layers()
	return &c, err
}

func runCheck(args []string) int {
	c, err := parseCheckArgs(args)
	if err != nil {
		return fsckUsageError("check", err)
	}
	if c.helpWasPrinted {
		return 0
	}
	if !c.repair {
		if w := fsck.InUseWarning(c.layers); w != "" {
			fmt.Fprintf(os.Stderr, "layerfs check: warning: %s\n", w)
		}
	}
	prog := newProgress("checking")
	rep, err := fsck.Check(c.layers, fsck.Options{Repair: c.repair, Force: c.force, Progress: prog.Add})
	prog.Done()
	if errors.Is(err, fsck.ErrInUse) {
		fmt.Fprintf(os.Stderr, "layerfs check: refusing to repair: the layers are %v\n", err)
		return fsckExitOperational
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "layerfs check: %v\n", err)
		return fsckExitOperational
	}
	if c.json {
		printCheckJSON(os.Stdout, rep)
	} else {
		printCheck(os.Stdout, rep)
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(os.Stderr, "layerfs check: error: %s\n", e)
	}
	return rep.ExitCode()
}

// printCheck writes one line per finding and note, then a summary.
func printCheck(w io.Writer, rep *fsck.Report) {
	fixed, repairable := 0, 0
	for _, f := range rep.Findings {
		var how string
		switch {
		case f.Fixed:
			fixed++
			how = "fixed: " + f.Repair
		case f.FixError != "":
			how = "repair failed: " + f.FixError
		case f.Unfixable != "" && rep.Repaired:
			how = "left: " + f.Unfixable
		case f.Unfixable != "":
			how = "not repairable: " + f.Unfixable
		default:
			repairable++
			how = "--repair fixes it"
		}
		fmt.Fprintf(w, "%s: %s [%s]\n", fsckQuotePath(f.Path), f.Problem, how)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "%s: note: %s\n", fsckQuotePath(n.Path), n.Text)
	}
	n := len(rep.Findings)
	switch {
	case n == 0:
		fmt.Fprintf(w, "layerfs check: no problems (%d entries)", rep.Entries)
	case rep.Repaired:
		fmt.Fprintf(w, "layerfs check: %d problems, %d fixed, %d left", n, fixed, n-fixed)
	default:
		fmt.Fprintf(w, "layerfs check: %d problems, %d repairable with --repair", n, repairable)
	}
	if len(rep.Errors) > 0 {
		fmt.Fprintf(w, "; %d parts could not be checked (see errors)", len(rep.Errors))
	}
	fmt.Fprintln(w)
}

func printCheckJSON(w io.Writer, rep *fsck.Report) {
	if rep.Findings == nil {
		rep.Findings = []*fsck.Finding{}
	}
	if rep.Notes == nil {
		rep.Notes = []fsck.Note{}
	}
	if rep.Errors == nil {
		rep.Errors = []string{}
	}
	out := struct {
		*fsck.Report
		Exit int `json:"exit"`
	}{rep, rep.ExitCode()}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

// fsckQuotePath quotes a path holding control characters, so that one finding
// stays one line.
func fsckQuotePath(p string) string {
	for _, r := range p {
		if r < ' ' || r == 0x7f {
			return fmt.Sprintf("%q", p)
		}
	}
	return p
}
