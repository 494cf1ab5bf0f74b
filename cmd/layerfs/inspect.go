package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
)

func init() {
	subcommands["inspect"] = func(args []string) int { return runInspect(args, os.Stdout, os.Stderr) }
}

const inspectUsage = `layerfs inspect: show what serves a union mount and from which directories

Usage:
  layerfs inspect [--json] MOUNTPOINT

Works on layerfs mounts and on kernel overlay mounts. Prints the driver,
the lower dirs (top first), upper, work and merged dir and the options, in
the shape of docker inspect's GraphDriver.Data; for a layerfs mount also
the server's live counters (read from the user.layerfs.status xattr on the
mount's root).

Examples:
  layerfs inspect /c/merged
  layerfs inspect --json /c/merged | jq -r .GraphDriver.Data.UpperDir
  getfattr --only-values -n user.layerfs.status /c/merged   # the raw status

Flags:
`

// graphDriver is docker inspect's GraphDriver object.
type graphDriver struct {
	Name string            `json:"Name"`
	Data map[string]string `json:"Data"`
}

type inspectOutput struct {
	GraphDriver graphDriver   `json:"GraphDriver"`
	Driver      string        `json:"Driver"`
	Options     []string      `json:"Options"`
	Stats       *layout.Stats `json:"Stats,omitempty"`
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fl.SetOutput(stderr)
	asJSON := fl.Bool("json", false, "print JSON")
	fl.Usage = func() { fmt.Fprint(stderr, inspectUsage); fl.PrintDefaults() }
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "layerfs inspect: %v\n", err)
		return 2
	}
	if fl.NArg() != 1 {
		fmt.Fprintln(stderr, "layerfs inspect: want one MOUNTPOINT (see --help)")
		return 2
	}
	d, err := layout.Describe(fl.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "layerfs inspect: %v\n", err)
		return 2
	}
	out := inspectOutput{
		GraphDriver: graphDriver{Name: "layerfs", Data: map[string]string{
			"LowerDir":  strings.Join(d.LowerDirs, ":"),
			"MergedDir": d.MergedDir,
			"UpperDir":  d.UpperDir,
			"WorkDir":   d.WorkDir,
		}},
		Driver:  d.Driver,
		Options: d.Options,
		Stats:   d.Stats,
	}
	if d.Driver == "kernel" {
		out.GraphDriver.Name = "overlay"
	}
	if out.Options == nil {
		out.Options = []string{}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
		return 0
	}
	printInspect(stdout, d)
	return 0
}

func printInspect(w io.Writer, d *layout.Description) {
	driver := "kernel (overlay)"
	if d.Stats != nil {
		driver = fmt.Sprintf("fuse (layerfs, pid %d)", d.Stats.PID)
	}
	fmt.Fprintf(w, "Driver:      %s\n", driver)
	fmt.Fprintf(w, "MergedDir:   %s\n", d.MergedDir)
	for i, l := range d.LowerDirs {
		label := "LowerDir:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-12s %s\n", label, l)
	}
	if d.UpperDir != "" {
		fmt.Fprintf(w, "UpperDir:    %s\n", d.UpperDir)
		fmt.Fprintf(w, "WorkDir:     %s\n", d.WorkDir)
	}
	fmt.Fprintf(w, "Options:     %s\n", strings.Join(d.Options, ","))
	if s := d.Stats; s != nil {
		fmt.Fprintf(w, "CopyUps:     %d (%s copied)\n", s.CopyUps, humanBytes(int64(s.CopyUpBytes)))
		fmt.Fprintf(w, "Whiteouts:   %d\n", s.Whiteouts)
		fmt.Fprintf(w, "OpenHandles: %d\n", s.OpenHandles)
		fmt.Fprintf(w, "HeldFds:     %d\n", s.HeldFds)
		fmt.Fprintf(w, "Requests:    %s\n", requestLine(s.Requests))
	}
}

// requestLine lists request counts, most frequent first.
func requestLine(reqs map[string]uint64) string {
	names := make([]string, 0, len(reqs))
	for n := range reqs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if reqs[names[i]] != reqs[names[j]] {
			return reqs[names[i]] > reqs[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %d", n, reqs[n])
	}
	return strings.Join(parts, ", ")
}
