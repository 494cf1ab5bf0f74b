package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/layerfs/layerfs/unionfs/changes"
	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
)

func init() {
	subcommands["diff"] = func(args []string) int { return runDiff(args, os.Stdout, os.Stderr) }
}

const diffUsage = `layerfs diff: list the changes an upper dir makes to its lower dirs

Usage:
  layerfs diff [--json] --upper U --lower L1:L2[:...]
  layerfs diff [--json] MOUNTPOINT

Prints one line per change, sorted by path, as docker diff and podman diff
do: "A /path" added, "C /path" changed (also a directory holding changes),
"D /path" deleted. Lower dirs are top first; --lower may repeat. With a
MOUNTPOINT (a layerfs or kernel overlay mount) its upper and lower dirs are
compared. Nothing is written.

Examples:
  layerfs diff --upper /c/upper --lower /img/l1:/img/l2
  layerfs diff --upper /c/upper --lower /img/l1 --lower /img/l2
  layerfs diff /c/merged
  layerfs diff --json /c/merged | jq -r '.[] | select(.Kind == "D") | .Path'
  layerfs diff \
    --upper "$(podman inspect --format '{{.GraphDriver.Data.UpperDir}}' ctr)" \
    --lower "$(podman inspect --format '{{.GraphDriver.Data.LowerDir}}' ctr)"

Flags:
`

func runDiff(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("diff", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var lf layerFlags
	lf.add(fl)
	asJSON := fl.Bool("json", false, `print a JSON array of {"Path": "/p", "Kind": "A"|"C"|"D"}`)
	fl.Usage = func() { fmt.Fprint(stderr, diffUsage); fl.PrintDefaults() }
	if code, done := parseFlags(fl, args, "diff", stderr); done {
		return code
	}
	l, err := lf.layers(fl.Args())
	if err != nil {
		fmt.Fprintf(stderr, "layerfs diff: %v\n", err)
		return 2
	}
	list, err := changes.Diff(l)
	if err != nil {
		fmt.Fprintf(stderr, "layerfs diff: %v\n", err)
		return 1
	}
	if err := printChanges(stdout, list, *asJSON); err != nil {
		fmt.Fprintf(stderr, "layerfs diff: %v\n", err)
		return 1
	}
	return 0
}

func printChanges(w io.Writer, list []changes.Change, asJSON bool) error {
	if asJSON {
		if list == nil {
			list = []changes.Change{} // "[]", not "null"
		}
		b, err := json.Marshal(list)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	for _, c := range list {
		if _, err := fmt.Fprintln(w, c); err != nil {
			return err
		}
	}
	return nil
}

// parseFlags parses args; done says the command is over (--help, or bad
// flags), with code its exit status.
func parseFlags(fl *flag.FlagSet, args []string, cmd string, stderr io.Writer) (code int, done bool) {
	err := fl.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0, true
	}
	if err != nil {
		fmt.Fprintf(stderr, "layerfs %s: %v (see --help)\n", cmd, err)
		return 2, true
	}
	return 0, false
}

// layerFlags are the two ways diff and export are told which layers to
// read: --upper and --lower, or the mount point of a live union.
type layerFlags struct {
	upper  string
	lowers []string
}

func (lf *layerFlags) add(fl *flag.FlagSet) {
	fl.StringVar(&lf.upper, "upper", "", "the upper (changed) dir")
	fl.StringArrayVar(&lf.lowers, "lower", nil, `lower dirs, top first: "L1:L2" ("\:" escapes a colon); may repeat`)
}

// layers resolves the flags and the positional args into checked Layers;
// every error is the caller's mistake.
func (lf *layerFlags) layers(args []string) (layout.Layers, error) {
	named := lf.upper != "" || len(lf.lowers) > 0
	var l layout.Layers
	switch {
	case len(args) > 1:
		return l, fmt.Errorf("want one MOUNTPOINT, got %d arguments (see --help)", len(args))
	case len(args) == 1 && named:
		return l, errors.New("give either --upper and --lower or a MOUNTPOINT, not both")
	case len(args) == 1:
		d, err := layout.Describe(args[0])
		if err != nil {
			return l, err
		}
		if d.UpperDir == "" {
			return l, fmt.Errorf("%s is a read-only union: it has no upper dir", args[0])
		}
		l = layout.Layers{Upper: d.UpperDir, Lowers: d.LowerDirs}
	case lf.upper == "":
		return l, errors.New("give --upper U --lower L1:L2, or a MOUNTPOINT (see --help)")
	default:
		l.Upper = lf.upper
		for _, v := range lf.lowers {
			l.Lowers = append(l.Lowers, splitEscaped(v, ':')...)
		}
	}
	return l, changes.Check(l)
}
