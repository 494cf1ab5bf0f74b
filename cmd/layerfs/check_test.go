package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/layerfs/layerfs/unionfs/fsck"
	"github.com/layerfs/layerfs/unionfs/layout"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseCheckArgs(t *testing.T) {
	c, err := parseCheckArgs([]string{"-o", `lowerdir=/l1:/l\:2,upperdir=/u,workdir=/w,redirect_dir=on,index=on,volatile`, "--repair"})
	require.NoError(t, err)
	assert.Equal(t, layout.Layers{Lowers: []string{"/l1", "/l:2"}, Upper: "/u", Work: "/w"}, c.layers)
	assert.True(t, c.repair)

	c, err = parseCheckArgs([]string{"--lower", "/a", "--lower", "/b", "-o", "upperdir=/u", "--work", "/w", "--json"})
	require.NoError(t, err)
	assert.Equal(t, layout.Layers{Lowers: []string{"/a", "/b"}, Upper: "/u", Work: "/w"}, c.layers)
	assert.True(t, c.json)

	for _, bad := range [][]string{
		{},
		{"--bogus"},
		{"-o", "lowerdir=/a", "extra"},
		{"-o", "lowerdir="},
		{"-o", "lowerdir=/a:"},
		{"--force", "-o", "lowerdir=/a"},
		{"-o", "workdir=/w"},
		{"-o", "upperdir=/u,workdir=/w"},
	} {
		_, err := parseCheckArgs(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestParseVacuumArgs(t *testing.T) {
	v, err := parseVacuumArgs([]string{"-n", "-o", "lowerdir=/l,upperdir=/u,workdir=/w"})
	require.NoError(t, err)
	assert.True(t, v.dryRun)
	assert.Equal(t, layout.Layers{Lowers: []string{"/l"}, Upper: "/u", Work: "/w"}, v.layers)
	for _, bad := range [][]string{{}, {"-o", "lowerdir=/l"}, {"--repair", "-o", "lowerdir=/l,upperdir=/u"}} {
		_, err := parseVacuumArgs(bad)
		assert.Error(t, err, "%q", bad)
	}
}

// One line per finding, "path: problem [what --repair does]", then a
// summary; a path with a newline stays on one line.
func TestPrintCheck(t *testing.T) {
	rep := &fsck.Report{Entries: 7, Findings: []*fsck.Finding{
		{Path: "/u/a", Kind: fsck.WhiteoutUseless, Problem: "whiteout hides nothing", Repair: "removed it"},
		{Path: "/u/new\nline", Kind: fsck.ReservedName, Problem: "reserved", Unfixable: "by hand"},
	}, Notes: []fsck.Note{{Path: "/w/index", Text: "index"}}}
	var b bytes.Buffer
	printCheck(&b, rep)
	assert.Equal(t, `/u/a: whiteout hides nothing [--repair fixes it]
"/u/new\nline": reserved [not repairable: by hand]
/w/index: note: index
layerfs check: 2 problems, 1 repairable with --repair
`, b.String())
	assert.Equal(t, 4, rep.ExitCode())

	rep.Repaired, rep.Findings[0].Fixed = true, true
	b.Reset()
	printCheck(&b, rep)
	assert.Contains(t, b.String(), "/u/a: whiteout hides nothing [fixed: removed it]\n")
	assert.Contains(t, b.String(), "[left: by hand]")
	assert.True(t, strings.HasSuffix(b.String(), "layerfs check: 2 problems, 1 fixed, 1 left\n"))
	assert.Equal(t, 5, rep.ExitCode(), "fixed and left add up")

	b.Reset()
	printCheckJSON(&b, rep)
	var out map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &out))
	assert.Equal(t, float64(5), out["exit"])
	assert.Len(t, out["findings"], 2)

	b.Reset()
	printCheck(&b, &fsck.Report{Entries: 3})
	assert.Equal(t, "layerfs check: no problems (3 entries)\n", b.String())
}
