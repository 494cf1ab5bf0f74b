package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/layerfs/layerfs/unionfs/changes"
	"github.com/layerfs/layerfs/unionfs/layout"
	flag "github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
)

func parseLayerFlags(t *testing.T, args ...string) (layout.Layers, error) {
	t.Helper()
	fl := flag.NewFlagSet("test", flag.ContinueOnError)
	var lf layerFlags
	lf.add(fl)
	if err := fl.Parse(args); err != nil {
		t.Fatal(err)
	}
	return lf.layers(fl.Args())
}

func TestLayerFlags(t *testing.T) {
	d := t.TempDir()
	mk := func(n string) string {
		p := filepath.Join(d, n)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	u, a, b, c, colon := mk("u"), mk("a"), mk("b"), mk("c"), mk("x:y")

	l, err := parseLayerFlags(t, "--upper", u, "--lower", a+":"+b, "--lower", c)
	assert.NoError(t, err)
	assert.Equal(t, layout.Layers{Upper: u, Lowers: []string{a, b, c}}, l, "top first, in order")

	l, err = parseLayerFlags(t, "--upper", u, "--lower", strings.ReplaceAll(colon, ":", `\:`))
	assert.NoError(t, err)
	assert.Equal(t, []string{colon}, l.Lowers, `"\:" escapes a colon`)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give --upper U --lower L1:L2, or a MOUNTPOINT"},
		{[]string{"--lower", a}, "give --upper U --lower L1:L2, or a MOUNTPOINT"},
		{[]string{"--upper", u, d}, "not both"},
		{[]string{d, d}, "want one MOUNTPOINT"},
		{[]string{"--upper", u, "--lower", ""}, "empty lower dir name"},
		{[]string{"--upper", u, "--lower", a + "::" + b}, "empty lower dir name"},
		{[]string{"--upper", u, "--lower", u}, "is both the upper dir and a lower dir"},
		{[]string{"--upper", filepath.Join(d, "nope"), "--lower", a}, "upper dir " + filepath.Join(d, "nope") + ": no such file"},
		{[]string{d}, "is not a mount point"},
	} {
		_, err := parseLayerFlags(t, tc.args...)
		if assert.Error(t, err, "%q", tc.args) {
			assert.Contains(t, err.Error(), tc.want, "%q", tc.args)
		}
	}
}

func TestPrintChanges(t *testing.T) {
	var b bytes.Buffer
	assert.NoError(t, printChanges(&b, nil, true))
	assert.Equal(t, "[]\n", b.String(), "no changes: an empty array, not null")
	b.Reset()
	list := []changes.Change{{Path: "/a", Kind: changes.Added}, {Path: "/b c", Kind: changes.Deleted}}
	assert.NoError(t, printChanges(&b, list, true))
	assert.Equal(t, `[{"Path":"/a","Kind":"A"},{"Path":"/b c","Kind":"D"}]`+"\n", b.String())
	b.Reset()
	assert.NoError(t, printChanges(&b, list, false))
	assert.Equal(t, "A /a\nD /b c\n", b.String())
}

func TestDiffHelp(t *testing.T) {
	var out, errb bytes.Buffer
	assert.Equal(t, 0, runDiff([]string{"--help"}, &out, &errb))
	assert.Contains(t, errb.String(), "Examples:")
	assert.Contains(t, errb.String(), "--json")
	assert.Equal(t, 2, runDiff([]string{"--nope"}, &out, &errb))
}
