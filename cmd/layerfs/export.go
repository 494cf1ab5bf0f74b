package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/layerfs/layerfs/unionfs/changes"
	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

func init() {
	subcommands["export"] = func(args []string) int { return runExport(args, os.Stdout, os.Stderr) }
}

const exportUsage = `layerfs export: write an upper dir's changes as an OCI image layer tarball

Usage:
  layerfs export [--mtime T] [-o FILE] --upper U --lower L1:L2[:...]
  layerfs export [--mtime T] [-o FILE] MOUNTPOINT

Writes the changes the upper dir makes to its lower dirs (see layerfs diff)
as an uncompressed PAX tar in OCI layer form: deletions as ".wh.NAME"
files, replaced directories marked with ".wh..wh..opq", a moved directory
written whole. Entries are in path order with numeric owners, xattrs
(but not the union's own), hard links and holes kept; the same layers give
the same bytes. The tarball goes to stdout (never to a terminal) or to
FILE. On a terminal, stderr shows progress.

Examples:
  layerfs export --upper /c/upper --lower /img/l1:/img/l2 -o layer.tar
  layerfs export /c/merged | gzip > layer.tar.gz
  layerfs export --mtime 2024-01-01T00:00:00Z /c/merged | sha256sum   # reproducible
  layerfs export --mtime @0 /c/merged | podman import - localhost/snap

Flags:
`

func runExport(args []string, stdout *os.File, stderr io.Writer) int {
	fl := flag.NewFlagSet("export", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var lf layerFlags
	lf.add(fl)
	mtimeArg := fl.String("mtime", "", "set every entry's mtime: RFC3339 (2024-01-01T00:00:00Z) or @UNIXSECONDS")
	outArg := fl.StringP("output", "o", "", "write to FILE instead of stdout")
	fl.Usage = func() { fmt.Fprint(stderr, exportUsage); fl.PrintDefaults() }
	if code, done := parseFlags(fl, args, "export", stderr); done {
		return code
	}
	bad := func(err error) int {
		fmt.Fprintf(stderr, "layerfs export: %v\n", err)
		return 2
	}
	mtime, err := parseMtime(*mtimeArg)
	if err != nil {
		return bad(err)
	}
	l, err := lf.layers(fl.Args())
	if err != nil {
		return bad(err)
	}
	out := stdout
	if *outArg == "" || *outArg == "-" {
		if isTerminal(stdout) {
			return bad(errors.New("refusing to write a tarball to a terminal: redirect stdout or give -o FILE"))
		}
	} else {
		// Written beside FILE and renamed over it at the end: a failed
		// export leaves FILE as it was.
		tmp := *outArg + ".layerfs-tmp"
		if out, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return bad(err)
		}
		defer os.Remove(tmp)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "layerfs export: %v\n", err)
		return 1
	}
	if err := export(out, l, mtime, stderr); err != nil {
		if out != stdout {
			out.Close()
		}
		return fail(err)
	}
	if out != stdout {
		if err := out.Close(); err != nil {
			return fail(err)
		}
		if err := os.Rename(out.Name(), *outArg); err != nil {
			return fail(err)
		}
	}
	return 0
}

// export runs changes.Export with a progress line on a terminal and
// warnings on stderr.
func export(out io.Writer, l layout.Layers, mtime time.Time, stderr io.Writer) error {
	p := newProgress("exporting")
	opt := changes.ExportOptions{
		MTime:    mtime,
		Progress: p.Add,
		Warn: func(msg string) {
			if p != nil {
				fmt.Fprint(stderr, "\r\033[K") // not onto the progress line
			}
			fmt.Fprintf(stderr, "layerfs export: warning: %s\n", msg)
		},
	}
	err := changes.Export(out, l, opt)
	p.Done()
	return err
}

// parseMtime reads --mtime: RFC3339, or "@" and seconds since the epoch.
// The empty string is the zero time: keep each entry's own mtime.
func parseMtime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if secs, ok := strings.CutPrefix(s, "@"); ok {
		n, err := strconv.ParseInt(secs, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("--mtime %s: want @ and whole seconds since 1970, like @1700000000", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--mtime %s: want RFC3339 (2024-01-01T00:00:00Z) or @UNIXSECONDS", s)
	}
	return t.Truncate(time.Second), nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
