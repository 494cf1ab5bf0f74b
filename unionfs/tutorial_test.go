package unionfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The seed chapter's walkthrough (Docker overlay2 chapter, 4.1), in process.
func TestTutorial(t *testing.T) {
	tu := newTestUnion(t, 2, func(lowers []string, upper string) {
		writeFile(t, filepath.Join(lowers[0], "lower1_file"), "")
		writeFile(t, filepath.Join(lowers[1], "lower2_file"), "")
		writeFile(t, filepath.Join(upper, "upper_file"), "")
	})
	assert.Equal(t, []string{"lower1_file", "lower2_file", "upper_file"}, names(t, tu.mnt))

	f, err := os.OpenFile(tu.m("lower1_file"), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("from_merged\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	assert.Equal(t, "from_merged\n", readFile(t, filepath.Join(tu.upper, "lower1_file")))
	assert.Equal(t, "", readFile(t, filepath.Join(tu.lowers[0], "lower1_file")))

	writeFile(t, tu.m("merged_file"), "")
	assert.Equal(t, []string{"lower1_file", "merged_file", "upper_file"}, names(t, tu.upper))
	tu.unmount(t)
	assert.Equal(t, []string{"lower1_file", "merged_file", "upper_file"}, names(t, tu.upper))
	assert.Equal(t, "from_merged\n", readFile(t, filepath.Join(tu.upper, "lower1_file")))
}
