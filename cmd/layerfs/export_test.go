package main

import (
	"bytes"
	"github.com/layerfs/layerfs/whiteout"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"
)

func TestParseMtime(t *testing.T) {
	for in, want := range map[string]time.Time{
		"":                          {},
		"@0":                        time.Unix(0, 0),
		"@1700000000":               time.Unix(1700000000, 0),
		"@-1":                       time.Unix(-1, 0),
		"2024-01-02T03:04:05Z":      time.Unix(1704164645, 0),
		"2024-01-02T04:04:05+01:00": time.Unix(1704164645, 0),
		"2024-01-02T03:04:05.9Z":    time.Unix(1704164645, 0), // whole seconds
	} {
		got, err := parseMtime(in)
		if assert.NoError(t, err, in) {
			assert.True(t, got.Equal(want), "%s: got %v, want %v", in, got, want)
		}
	}
	for _, in := range []string{"yesterday", "@", "@1.5", "2024-01-02", "1700000000"} {
		_, err := parseMtime(in)
		assert.Error(t, err, in)
	}
}

func TestExportOutput(t *testing.T) {
	d := t.TempDir()
	u, l := filepath.Join(d, "u"), filepath.Join(d, "l")
	for _, p := range []string{u, l, filepath.Join(u, "dir")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(d, "out.tar")
	var errb bytes.Buffer
	assert.Equal(t, 0, runExport([]string{"-o", out, "--upper", u, "--lower", l}, os.Stdout, &errb), errb.String())
	b, err := os.ReadFile(out)
	assert.NoError(t, err)
	assert.Equal(t, 3*512, len(b), "one dir entry and the end of archive")
	assert.Equal(t, "dir/", string(bytes.TrimRight(b[:100], "\x00")))

	// A failed export leaves FILE as it was and nothing beside it: here
	// a metacopy file whose data is in no lower.
	good, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(u, "dir", "metacopy")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the trusted form marks a metacopy file, as for a mount.
	if err := unix.Setxattr(f, whiteout.Trusted.Name(whiteout.Metacopy), nil, 0); err != nil {
		t.Skipf("no trusted xattrs here: %v", err)
	}
	errb.Reset()
	assert.Equal(t, 1, runExport([]string{"-o", out, "--upper", u, "--lower", l}, os.Stdout, &errb))
	assert.Contains(t, errb.String(), "layerfs export: ")
	assert.Contains(t, errb.String(), "metacopy")
	after, err := os.ReadFile(out)
	assert.NoError(t, err)
	assert.Equal(t, good, after, "a failed export changed FILE")
	_, err = os.Stat(out + ".layerfs-tmp")
	assert.True(t, os.IsNotExist(err), "a half-written tarball was left: %v", err)
}
