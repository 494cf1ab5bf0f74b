package bench

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// dataVersion changes whenever the layout below changes, so that a cache
// made by an older harness is rebuilt.
const dataVersion = 1

// dataSpec says what to prepare; it is stored beside the data and the data
// is rebuilt when it differs.
type dataSpec struct {
	Version   int
	Name      string   // "full" or "quick": the cache subdirectory
	BigSize   int64    // size of lower2/big.bin
	Tree      []string // GOROOT subpaths copied to lower1/go; empty = all
	Tar       []string // GOROOT subpaths in untar.tar
	Repo      string   // GOROOT subpath committed as lower1/repo
	GOROOT    string
	GoVersion string
}

func fullSpec() dataSpec {
	return dataSpec{
		Version: dataVersion,
		Name:    "full",
		BigSize: 1 << 30,
		Tar:     []string{"src/cmd", "src/runtime", "test"},
		Repo:    "src/net",
	}
}

func quickSpec() dataSpec {
	return dataSpec{
		Version: dataVersion,
		Name:    "quick",
		BigSize: 100 << 20,
		Tree: []string{"src/bufio", "src/bytes", "src/io", "src/net", "src/os",
			"src/runtime", "src/sort", "src/strings"},
		Tar:  []string{"src/os", "src/runtime"},
		Repo: "src/net",
	}
}

// dataset is the prepared lower data. The union is lowerdir=lower1:lower2:
//
//	lower1/go/...      copy of GOROOT (or part of it)
//	lower1/repo/       git repository (a committed copy of GOROOT/src/net)
//	lower2/big.bin     BigSize bytes of pseudo-random data
//	untar.tar          tarball extracted by the untar workload
type dataset struct {
	spec    dataSpec
	root    string
	lower1  string
	lower2  string
	tarball string
	bigSize int64
	dataCounts
}

// dataCounts are measured when the data is made and checked against what
// the workloads see.
type dataCounts struct {
	TreeEntries int   // entries under lower1/go, itself included
	TreeBytes   int64 // bytes in regular files under lower1/go
	NetEntries  int   // entries under lower1/go/src/net, itself included
	TarEntries  int
}

const specFile = "spec.json"

// prepareData returns the dataset under dataDir, building it when it is
// missing or was made from another spec or Go installation.
func prepareData(ctx context.Context, dataDir string, spec dataSpec) (*dataset, error) {
	goroot, err := goEnv("GOROOT")
	if err != nil {
		return nil, err
	}
	spec.GOROOT = goroot
	spec.GoVersion = runtime.Version()
	if v, err := goEnv("GOVERSION"); err == nil {
		spec.GoVersion = v
	}
	root := filepath.Join(dataDir, spec.Name)
	if ds, err := loadDataset(root, spec); err == nil {
		return ds, nil
	}
	tmp := root + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := buildDataset(ctx, tmp, spec); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, root); err != nil {
		return nil, err
	}
	return loadDataset(root, spec)
}

func goEnv(name string) (string, error) {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		if runtime.GOROOT() != "" && name == "GOROOT" {
			return runtime.GOROOT(), nil
		}
		return "", fmt.Errorf("go env %s: %w", name, err)
	}
	return strings.TrimSpace(string(out)), nil
}

type storedSpec struct {
	Spec   dataSpec
	Counts dataCounts
}

func loadDataset(root string, spec dataSpec) (*dataset, error) {
	raw, err := os.ReadFile(filepath.Join(root, specFile))
	if err != nil {
		return nil, err
	}
	var st storedSpec
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, errors.New("bad spec file")
	}
	a, _ := json.Marshal(st.Spec)
	b, _ := json.Marshal(spec)
	if string(a) != string(b) {
		return nil, errors.New("spec changed")
	}
	ds := &dataset{
		spec:       spec,
		root:       root,
		lower1:     filepath.Join(root, "lower1"),
		lower2:     filepath.Join(root, "lower2"),
		tarball:    filepath.Join(root, "untar.tar"),
		bigSize:    spec.BigSize,
		dataCounts: st.Counts,
	}
	st2, err := os.Stat(ds.bigPath())
	if err != nil || st2.Size() != spec.BigSize {
		return nil, errors.New("big file missing or truncated")
	}
	return ds, nil
}

func (ds *dataset) bigPath() string { return filepath.Join(ds.lower2, "big.bin") }

func buildDataset(ctx context.Context, root string, spec dataSpec) error {
	lower1 := filepath.Join(root, "lower1")
	lower2 := filepath.Join(root, "lower2")
	goDir := filepath.Join(lower1, "go")
	for _, d := range []string{lower1, lower2} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	logf("  copying %s to %s", spec.GOROOT, goDir)
	if len(spec.Tree) == 0 {
		if err := cmdRun(ctx, "", nil, nil, "cp", "-a", spec.GOROOT+"/.", goDir); err != nil {
			return err
		}
	} else {
		for _, sub := range spec.Tree {
			dst := filepath.Join(goDir, sub)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := cmdRun(ctx, "", nil, nil, "cp", "-a", filepath.Join(spec.GOROOT, sub), dst); err != nil {
				return err
			}
		}
	}
	if _, err := os.Stat(filepath.Join(goDir, "src", "net")); err != nil {
		return fmt.Errorf("tree has no src/net (needed by rename-dir): %w", err)
	}

	logf("  making the git repository (%s)", spec.Repo)
	repo := filepath.Join(lower1, "repo")
	if err := cmdRun(ctx, "", nil, nil, "cp", "-a", filepath.Join(spec.GOROOT, spec.Repo), repo); err != nil {
		return err
	}
	genv := gitEnv(root)
	for _, args := range [][]string{
		{"init", "-q"},
		{"add", "-A"},
		{"-c", "user.name=layerfs-bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "benchmark data"},
		{"status", "--porcelain"}, // refreshes and writes the index
	} {
		if err := cmdRun(ctx, repo, genv, nil, "git", args...); err != nil {
			return err
		}
	}

	logf("  writing %s of pseudo-random data", humanBytes(spec.BigSize))
	if err := writeRandomFile(filepath.Join(lower2, "big.bin"), spec.BigSize); err != nil {
		return err
	}

	logf("  making the tarball (%s)", strings.Join(spec.Tar, " "))
	tarball := filepath.Join(root, "untar.tar")
	targs := append([]string{"-cf", tarball, "-C", spec.GOROOT}, spec.Tar...)
	if err := cmdRun(ctx, "", nil, nil, "tar", targs...); err != nil {
		return err
	}

	var ds dataCounts
	var err error
	if ds.TreeEntries, ds.TreeBytes, err = countTree(goDir); err != nil {
		return err
	}
	if ds.NetEntries, _, err = countTree(filepath.Join(goDir, "src", "net")); err != nil {
		return err
	}
	if ds.TarEntries, err = countTar(tarball); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(storedSpec{Spec: spec, Counts: ds}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, specFile), raw, 0o644)
}

// gitEnv isolates git from the machine's and user's configuration.
func gitEnv(home string) []string {
	return []string{
		"HOME=" + home,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_OPTIONAL_LOCKS=1",
	}
}

// countTree counts the entries under dir (dir included) and the bytes in
// its regular files, without following symlinks.
func countTree(dir string) (int, int64, error) {
	n := 0
	var size int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			size += info.Size()
		}
		return nil
	})
	return n, size, err
}

func countTar(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	n := 0
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// rng is a small xorshift generator: fast, deterministic, and good enough
// to make data that neither compresses nor dedupes.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s ^= r.s << 13
	r.s ^= r.s >> 7
	r.s ^= r.s << 17
	return r.s
}

func (r *rng) fill(b []byte) {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.next())
	}
	for ; i < len(b); i++ {
		b[i] = byte(r.next())
	}
}

// writeRandomFile writes size bytes of pseudo-random data (every block
// allocated, nothing sparse) and syncs it.
func writeRandomFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	r := &rng{s: 0x9e3779b97f4a7c15}
	buf := make([]byte, 4<<20)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		r.fill(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
