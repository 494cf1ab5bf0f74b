package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/layerfs/layerfs/unionfs/fsck"
	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
)

func init() {
	subcommands["vacuum"] = runVacuum
}

const vacuumUsage = `layerfs vacuum: remove upper copies identical to what the lower dirs show

Usage:
  layerfs vacuum [--dry-run] [-v] [--json] -o lowerdir=L1:L2,upperdir=U,workdir=W
  layerfs vacuum [--dry-run] [-v] [--json] --lower L1 --lower L2 --upper U --work W

Run it on an unmounted union. It removes an upper regular file or symlink
when the lower dirs show the same thing at the same path: same type,
content, mode, owner, size, mtime and user-visible xattrs, one link on both
sides, no union metadata but an origin naming that lower file, under no
opaque or redirected upper directory. Upper directories left empty go too
when the lower directory they cover has the same mode, owner, mtime and
xattrs. So the upper shrinks and the merged view does not change (inode
numbers of copies made without an origin record excepted). It refuses while
a kernel overlay mount or a layerfs server uses the dirs.

Exit status: 0 done, 8 operational error (a layer could not be read, an
entry could not be examined, or the union is in use), 16 usage error.

Examples:
  layerfs vacuum --dry-run -o lowerdir=/img/l1:/img/l2,upperdir=/c/upper,workdir=/c/work
  layerfs vacuum -v --lower /img/l1 --upper /c/upper --work /c/work

Flags:
`

// vacuumEntry is one entry removed (or that would be), for --json.
type vacuumEntry struct {
	Path  string `json:"path"`
	Dir   bool   `json:"dir"`
	Bytes int64  `json:"bytes"`
}

type vacuumArgs struct {
	layers   layout.Layers
	dryRun   bool
	verbose  bool
	json     bool
	helpShow bool
}

func parseVacuumArgs(args []string) (*vacuumArgs, error) {
	fl := flag.NewFlagSet("layerfs vacuum", flag.ContinueOnError)
	var lf fsckLayerFlags
	var v vacuumArgs
	lf.register(fl)
	fl.BoolVarP(&v.dryRun, "dry-run", "n", false, "list what would be removed, remove nothing")
	fl.BoolVarP(&v.verbose, "verbose", "v", false, "list what is removed")
	fl.BoolVar(&v.json, "json", false, "print the result as JSON")
	shown, err := parseFsckFlags(fl, vacuumUsage, args)
	if shown || err != nil {
		v.helpShow = shown
		return &v, err
	}
	if v.layers, err = lf.layers(); err != nil {
		return nil, err
	}
	if v.layers.Upper == "" {
		return nil, errors.New("no upper dir given (upperdir=U or --upper U)")
	}
	return &v, nil
}

func runVacuum(args []string) int {
	v, err := parseVacuumArgs(args)
	if err != nil {
		return fsckUsageError("vacuum", err)
	}
	if v.helpShow {
		return 0
	}
	if v.dryRun {
		if w := fsck.InUseWarning(v.layers); w != "" {
			fmt.Fprintf(os.Stderr, "layerfs vacuum: warning: %s\n", w)
		}
	}
	prog := newProgress("vacuuming")
	opt := fsck.VacuumOptions{DryRun: v.dryRun, Progress: prog.Add}
	var removed []vacuumEntry
	if v.json {
		opt.Removed = func(p string, isDir bool, bytes int64) {
			removed = append(removed, vacuumEntry{p, isDir, bytes})
		}
	} else if v.dryRun || v.verbose {
		verb := "removed"
		if v.dryRun {
			verb = "would remove"
		}
		opt.Removed = func(p string, isDir bool, bytes int64) {
			if isDir {
				p += "/"
			}
			fmt.Printf("%s %s (%s)\n", verb, fsckQuotePath(p), humanBytes(bytes))
		}
	}
	res, err := fsck.Vacuum(v.layers, opt)
	prog.Done()
	if errors.Is(err, fsck.ErrInUse) {
		fmt.Fprintf(os.Stderr, "layerfs vacuum: refusing: the layers are %v\n", err)
		return fsckExitOperational
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "layerfs vacuum: %v\n", err)
		return fsckExitOperational
	}
	if v.json {
		if res.Errors == nil {
			res.Errors = []string{}
		}
		if removed == nil {
			removed = []vacuumEntry{}
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			*fsck.VacuumResult
			DryRun  bool          `json:"dry_run"`
			Removed []vacuumEntry `json:"removed"`
		}{res, v.dryRun, removed})
	} else {
		verb := "removed"
		if v.dryRun {
			verb = "would remove"
		}
		fmt.Printf("layerfs vacuum: %s %d files and %d directories, %s (%d upper entries looked at)\n", verb, res.Files, res.Dirs, humanBytes(res.Bytes), res.Entries)
	}
	for _, e := range res.Errors {
		fmt.Fprintf(os.Stderr, "layerfs vacuum: error (kept): %s\n", e)
	}
	if len(res.Errors) > 0 {
		return fsckExitOperational
	}
	return 0
}
