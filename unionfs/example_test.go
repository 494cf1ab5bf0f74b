package unionfs_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/layerfs/layerfs/unionfs"
)

// Mount a union in-process, use it, unmount it. (Needs root or a user
// namespace, and /dev/fuse.)
func ExampleMount() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "lower", "hello"), []byte("from the lower layer\n"), 0o644)

	srv, err := unionfs.Mount(context.Background(), unionfs.Options{
		Lowers:     []string{filepath.Join(dir, "lower")},
		Upper:      filepath.Join(dir, "upper"),
		Work:       filepath.Join(dir, "work"),
		Mountpoint: filepath.Join(dir, "merged"),
	})
	if err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "merged", "hello"))
	fmt.Print(string(b))
	if err := srv.Unmount(); err != nil {
		log.Fatal(err)
	}
	srv.Wait()
}
