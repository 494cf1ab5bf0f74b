package main

import (
	"io"
	"testing"

	"github.com/layerfs/layerfs/unionfs"
	"github.com/stretchr/testify/assert"
)

func TestParseMountOptions(t *testing.T) {
	var o unionfs.Options
	w, err := parseMountOptions(`lowerdir=/a:/b\:c:/d,upperdir=/u\,x,workdir=/w,,volatile,context="x",bogus=1`, &o)
	assert.NoError(t, err)
	assert.Equal(t, []string{"/a", "/b:c", "/d"}, o.Lowers)
	assert.Equal(t, "/u,x", o.Upper)
	assert.Equal(t, "/w", o.Work)
	assert.True(t, o.NoSync)
	assert.Len(t, w, 1)
	assert.Contains(t, w[0], "bogus")

	for _, bad := range []string{"lowerdir=", "lowerdir=/a::/b", "upperdir", "fsync=2", "uidmapping=0:1000", "uidmapping=a:b:c", "squash_to_uid=x", "redirect_dir=yes", "metacopy=1", "index=yes"} {
		var o unionfs.Options
		_, err := parseMountOptions(bad, &o)
		assert.Error(t, err, bad)
	}
}

func TestParseIDMapping(t *testing.T) {
	var o unionfs.Options
	_, err := parseMountOptions("lowerdir=/l,uidmapping=:0:1:1002:1002:0:1:1003:1003:64534,gidmapping=0:100000:65536,squash_to_uid=7", &o)
	assert.NoError(t, err)
	assert.Equal(t, []unionfs.IDMap{{Stored: 0, Shown: 1, Size: 1002}, {Stored: 1002, Shown: 0, Size: 1}, {Stored: 1003, Shown: 1003, Size: 64534}}, o.UIDMap)
	assert.Equal(t, []unionfs.IDMap{{Stored: 0, Shown: 100000, Size: 65536}}, o.GIDMap)
	assert.Equal(t, uint32(7), *o.SquashUID)
	assert.Nil(t, o.SquashGID)
}

func TestParseArgs(t *testing.T) {
	c, err := parseArgs([]string{"/mnt", "-o", "lowerdir=/l", "-o", "ro", "--lower", "/l2"}, io.Discard)
	assert.NoError(t, err)
	assert.Equal(t, "/mnt", c.opts.Mountpoint)
	assert.Equal(t, []string{"/l", "/l2"}, c.opts.Lowers)
	assert.True(t, c.opts.ReadOnly)

	// mount.fuse3 style: SOURCE MOUNTPOINT -o OPTS
	c, err = parseArgs([]string{"layerfs", "/mnt", "-o", "lowerdir=/l"}, io.Discard)
	assert.NoError(t, err)
	assert.Equal(t, "/mnt", c.opts.Mountpoint)

	_, err = parseArgs([]string{"a", "b", "c"}, io.Discard)
	assert.Error(t, err)
}

func FuzzParseMountOptions(f *testing.F) {
	for _, s := range []string{
		"lowerdir=/a:/b,upperdir=/u,workdir=/w,,volatile",
		`lowerdir=/x\:y,uidmapping=:0:1:1002:1002:0:1`,
		"fsync=0,ro,allow_other,,",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var o unionfs.Options
		parseMountOptions(s, &o) // must not panic
	})
}
