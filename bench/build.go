package bench

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The build workload does in a union what a container build step does in
// its layer, all in this process (no exec, so the file system's cost is
// what is timed): compile-like churn over a lower source tree, each
// object written under a temporary name and renamed over its target,
// twice (a build, then a rebuild that replaces every object); an
// npm-install-like tree of many small files; then a clean that deletes
// the objects.

// buildPackages is how many packages the node_modules tree gets; each
// has buildPackageFiles files.
const (
	buildPackages     = 400
	buildPackageFiles = 4
)

func buildWorkload() *workload {
	return &workload{
		name:  "build",
		uses:  "tree",
		desc:  fmt.Sprintf("in-process build churn over the lower go/src/net: read every source, write its object through a temporary renamed over it, twice; a node_modules tree of %d packages x %d small files; delete the objects", buildPackages, buildPackageFiles),
		plain: "the same on a hard-linked copy of go/src/net (`cp -al`, untimed) in a fresh directory",
		setup: func(ctx context.Context, e *env) error {
			if e.plain {
				return cmdRun(ctx, "", nil, nil, "cp", "-al", filepath.Join(e.goDir, "src", "net"), filepath.Join(e.scratch, "net"))
			}
			return nil
		},
		run: func(ctx context.Context, e *env) error {
			src, out := buildDirs(e)
			for pass := 0; pass < 2; pass++ {
				if err := compileTree(ctx, src); err != nil {
					return err
				}
			}
			if err := nodeModules(filepath.Join(out, "node_modules")); err != nil {
				return err
			}
			return cleanObjects(ctx, src)
		},
		check: func(e *env) error {
			src, out := buildDirs(e)
			n, _, err := countTree(src)
			if err == nil && n != e.ds.NetEntries {
				return fmt.Errorf("the source tree has %d entries after the clean, want %d", n, e.ds.NetEntries)
			}
			n, _, err = countTree(filepath.Join(out, "node_modules"))
			if want := 1 + buildPackages*(2+buildPackageFiles); err == nil && n != want {
				err = fmt.Errorf("node_modules has %d entries, want %d", n, want)
			}
			return err
		},
	}
}

// buildDirs are the source tree the build works in and the directory it
// writes its own tree into.
func buildDirs(e *env) (src, out string) {
	if e.plain {
		return filepath.Join(e.scratch, "net"), e.write
	}
	return filepath.Join(e.goDir, "src", "net"), e.write
}

// compileTree writes, for every regular file of dir, an object beside it:
// the source read whole, written to NAME.o.tmp and renamed over NAME.o.
func compileTree(ctx context.Context, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".o") || strings.HasSuffix(p, ".o.tmp") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p+".o.tmp", data, 0o644); err != nil {
			return err
		}
		return os.Rename(p+".o.tmp", p+".o")
	})
}

// nodeModules makes a tree of small files as a package manager does.
func nodeModules(dir string) error {
	for i := 0; i < buildPackages; i++ {
		pkg := filepath.Join(dir, fmt.Sprintf("pkg%03d", i))
		if err := os.MkdirAll(filepath.Join(pkg, "lib"), 0o755); err != nil {
			return err
		}
		for j := 0; j < buildPackageFiles; j++ {
			name := filepath.Join(pkg, "lib", fmt.Sprintf("m%d.js", j))
			if j == 0 {
				name = filepath.Join(pkg, "package.json")
			}
			if err := os.WriteFile(name, []byte(fmt.Sprintf("module %d/%d\n", i, j)), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanObjects deletes the objects compileTree made.
func cleanObjects(ctx context.Context, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".o") {
			return os.Remove(p)
		}
		return nil
	})
}
