// Command layerfs-bench benchmarks layerfs against kernel overlay,
// fuse-overlayfs and a plain directory; see package bench and --help.
package main

import (
	"os"

	"github.com/layerfs/layerfs/bench"
)

func main() {
	os.Exit(bench.Main(os.Args[1:]))
}
