package bench

import (
	"bufio"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Results is everything results.json holds.
type Results struct {
	Machine     Machine             `json:"machine"`
	Settings    Settings            `json:"settings"`
	Contenders  []string            `json:"contenders"`
	Workloads   []WorkloadResult    `json:"workloads"`
	Notes       []string            `json:"notes,omitempty"`
	MountTypes  map[string][]string `json:"mount_types"` // contender -> filesystem types its mounts had
	LayerfsArgs []string            `json:"layerfs_args,omitempty"`
	BaseArgs    []string            `json:"layerfs_base_args,omitempty"` // given to the --baseline binary
	Elapsed     string              `json:"elapsed,omitempty"`
}

// Machine describes where the numbers come from.
type Machine struct {
	Date                 string            `json:"date"`
	Nproc                int               `json:"nproc"`
	CPU                  string            `json:"cpu,omitempty"`
	MemTotal             string            `json:"mem_total,omitempty"`
	Kernel               string            `json:"kernel"`
	DataFS               string            `json:"data_fs,omitempty"`
	OverlayParams        map[string]string `json:"kernel_overlay_params,omitempty"`
	FuseOverlayfsVersion string            `json:"fuse_overlayfs_version,omitempty"`
	LayerfsBinary        string            `json:"layerfs_binary,omitempty"`
	LayerfsCommit        string            `json:"layerfs_commit,omitempty"`
	LayerfsVersion       string            `json:"layerfs_version,omitempty"`
	BaseBinary           string            `json:"layerfs_base_binary,omitempty"` // --baseline
	BaseCommit           string            `json:"layerfs_base_commit,omitempty"`
	BaseVersion          string            `json:"layerfs_base_version,omitempty"`
	GoVersion            string            `json:"go_version"`
	LoadAvgStart         string            `json:"loadavg_start"`
	LoadAvgEnd           string            `json:"loadavg_end,omitempty"`
}

// Settings are the knobs of the run.
type Settings struct {
	Reps        int    `json:"reps"`
	Quick       bool   `json:"quick"`
	DataSet     string `json:"data_set"`
	DataDir     string `json:"data_dir"`
	BigFile     int64  `json:"big_file_bytes"`
	TreeEntries int    `json:"tree_entries"`
	TreeBytes   int64  `json:"tree_bytes"`
	TarEntries  int    `json:"tar_entries"`
	Timeout     string `json:"timeout"`
	ColdCache   bool   `json:"cold_cache_supported"`
}

// WorkloadResult holds one table row.
type WorkloadResult struct {
	Name        string           `json:"name"`
	Description string           `json:"description"`
	Plain       string           `json:"plain_means"`
	Cold        bool             `json:"cold"`
	Cache       string           `json:"cache"` // cold, warm or no drop
	Cells       map[string]*Cell `json:"results"`
}

// Cell is one contender on one workload.
type Cell struct {
	Times    []float64 `json:"times_s"`
	Errors   []string  `json:"errors,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`
	Median   *float64  `json:"median_s"`               // nil when a repetition failed
	Ratio    *float64  `json:"ratio_to_kernel"`        // median / kernel's median
	PeakRSS  []int64   `json:"peak_rss_kib,omitempty"` // FUSE server VmHWM per repetition
	// Requests are a layerfs server's FUSE requests in the timed phase,
	// by kind, per repetition.
	Requests []map[string]uint64 `json:"requests,omitempty"`
}

func newResults(b *bench, notes []string) *Results {
	r := &Results{
		Contenders:  b.cfg.contenders,
		Notes:       notes,
		MountTypes:  map[string][]string{},
		LayerfsArgs: b.layerfsArgs,
		BaseArgs:    b.baseArgs,
		Settings: Settings{
			Reps:        b.cfg.reps,
			Quick:       b.cfg.quick,
			DataSet:     b.ds.spec.Name,
			DataDir:     b.cfg.data,
			BigFile:     b.ds.bigSize,
			TreeEntries: b.ds.TreeEntries,
			TreeBytes:   b.ds.TreeBytes,
			TarEntries:  b.ds.TarEntries,
			Timeout:     b.cfg.timeout.String(),
			ColdCache:   b.cold,
		},
		Machine: machineInfo(b),
	}
	for _, w := range b.workloads {
		wr := WorkloadResult{Name: w.name, Description: w.desc, Plain: w.plain, Cold: w.cold, Cache: w.cache(), Cells: map[string]*Cell{}}
		for _, c := range b.cfg.contenders {
			wr.Cells[c] = &Cell{Times: []float64{}}
		}
		r.Workloads = append(r.Workloads, wr)
	}
	return r
}

func (r *Results) add(workload, contender string, tr trialResult) {
	if tr.fstype != "" && !contains(r.MountTypes[contender], tr.fstype) {
		r.MountTypes[contender] = append(r.MountTypes[contender], tr.fstype)
	}
	for i := range r.Workloads {
		if r.Workloads[i].Name != workload {
			continue
		}
		c := r.Workloads[i].Cells[contender]
		c.Warnings = append(c.Warnings, tr.warn...)
		if tr.err != "" {
			c.Errors = append(c.Errors, tr.err)
		} else {
			c.Times = append(c.Times, tr.dur.Seconds())
		}
		if tr.rssKiB > 0 {
			c.PeakRSS = append(c.PeakRSS, tr.rssKiB)
		}
		if tr.requests != nil && tr.err == "" {
			c.Requests = append(c.Requests, tr.requests)
		}
	}
}

// finish computes medians and ratios from the times so far. A cell with
// any failed repetition has no median: it shows as "error".
func (r *Results) finish() {
	for i := range r.Workloads {
		w := &r.Workloads[i]
		for _, c := range w.Cells {
			c.Median, c.Ratio = nil, nil
			if len(c.Errors) == 0 && len(c.Times) > 0 {
				m := median(c.Times)
				c.Median = &m
			}
		}
		k := w.Cells[cKernel]
		if k == nil || k.Median == nil || *k.Median <= 0 {
			continue
		}
		for _, c := range w.Cells {
			if c.Median != nil {
				ratio := *c.Median / *k.Median
				c.Ratio = &ratio
			}
		}
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtDuration(sec float64) string {
	switch {
	case sec >= 100:
		return fmt.Sprintf("%.0fs", sec)
	case sec >= 10:
		return fmt.Sprintf("%.1fs", sec)
	case sec >= 1:
		return fmt.Sprintf("%.2fs", sec)
	case sec >= 0.1:
		return fmt.Sprintf("%.0fms", sec*1000)
	case sec >= 0.01:
		return fmt.Sprintf("%.1fms", sec*1000)
	default:
		return fmt.Sprintf("%.2fms", sec*1000)
	}
}

func fmtRatio(r float64) string {
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0fx", r)
	case r >= 10:
		return fmt.Sprintf("%.1fx", r)
	case r >= 0.1:
		return fmt.Sprintf("%.2fx", r)
	default:
		return fmt.Sprintf("%.2gx", r)
	}
}

func (c *Cell) timeText() string {
	if c == nil {
		return "-"
	}
	if c.Median == nil {
		if len(c.Errors) > 0 {
			return "error"
		}
		return "-"
	}
	if len(c.Warnings) > 0 {
		return fmtDuration(*c.Median) + "*"
	}
	return fmtDuration(*c.Median)
}

func (c *Cell) ratioText() string {
	if c == nil {
		return "-"
	}
	if c.Ratio == nil {
		if len(c.Errors) > 0 {
			return "error"
		}
		return "n/a"
	}
	return fmtRatio(*c.Ratio)
}

// columns are the contenders the tables show, in table order: all of
// them, run or not, and layerfs-base when the run had it.
func (r *Results) columns() []string {
	return tableOrder(contains(r.Contenders, cLayerBase))
}

// unionColumns are the columns other than plain and kernel: the unions
// compared to kernel overlay, all of them FUSE servers.
func (r *Results) unionColumns() []string {
	var out []string
	for _, c := range r.columns() {
		if c != cPlain && c != cKernel {
			out = append(out, c)
		}
	}
	return out
}

// markdownTable renders the main table: medians and ratios to kernel.
func (r *Results) markdownTable() string {
	header := []string{"workload"}
	header = append(header, r.columns()...)
	for _, c := range r.unionColumns() {
		header = append(header, c+"/kernel")
	}
	rows := [][]string{header}
	for _, w := range r.Workloads {
		row := []string{w.Name}
		for _, c := range r.columns() {
			row = append(row, w.Cells[c].timeText())
		}
		for _, c := range r.unionColumns() {
			row = append(row, w.Cells[c].ratioText())
		}
		rows = append(rows, row)
	}
	return renderTable(rows, 1)
}

// abTable renders, when the run had a --baseline, layerfs against
// layerfs-base per workload: both medians, their ratio and whether the
// repetitions of the two separate. It is "" without a baseline.
func (r *Results) abTable() string {
	if !contains(r.Contenders, cLayerBase) {
		return ""
	}
	rows := [][]string{{"workload", cLayer + " (after)", cLayerBase + " (before)", "after/before", "repetitions"}}
	for _, w := range r.Workloads {
		after, before := w.Cells[cLayer], w.Cells[cLayerBase]
		ratio, verdict := "-", "-"
		if after != nil && before != nil && after.Median != nil && before.Median != nil && *before.Median > 0 {
			ratio = fmtRatio(*after.Median / *before.Median)
			verdict = separation(after.Times, before.Times)
		} else if (after != nil && len(after.Errors) > 0) || (before != nil && len(before.Errors) > 0) {
			ratio = "error"
		}
		rows = append(rows, []string{w.Name, after.timeText(), before.timeText(), ratio, verdict})
	}
	return renderTable(rows, 1)
}

// separation says whether every time of after is below ("faster") or above
// ("slower") every time of before; "overlap" otherwise, and "-" with fewer
// than two repetitions on either side.
func separation(after, before []float64) string {
	if len(after) < 2 || len(before) < 2 {
		return "-"
	}
	minA, maxA := slices.Min(after), slices.Max(after)
	minB, maxB := slices.Min(before), slices.Max(before)
	switch {
	case maxA < minB:
		return "faster"
	case minA > maxB:
		return "slower"
	}
	return "overlap"
}

// chanceSeparate is the probability that n repetitions of each of two
// identical builds come out separated (all of one below all of the other,
// either way round): 2 of the C(2n, n) equally likely orders.
func chanceSeparate(n int) float64 {
	c := 1.0 // C(2n, n), built up as the product of (n+i)/i
	for i := 1; i <= n; i++ {
		c = c * float64(n+i) / float64(i)
	}
	return 2 / c
}

// rssTable renders the FUSE servers' peak RSS (max over repetitions).
func (r *Results) rssTable() string {
	cols := r.unionColumns()
	rows := [][]string{append([]string{"peak RSS (MiB)"}, cols...)}
	maxes := make([]int64, len(cols))
	for _, w := range r.Workloads {
		row := []string{w.Name}
		for i, c := range cols {
			cell := w.Cells[c]
			if cell == nil || len(cell.PeakRSS) == 0 {
				row = append(row, "-")
				continue
			}
			m := maxInt(cell.PeakRSS)
			maxes[i] = max(maxes[i], m)
			row = append(row, fmt.Sprintf("%.1f", float64(m)/1024))
		}
		rows = append(rows, row)
	}
	row := []string{"**max**"}
	for _, m := range maxes {
		if m == 0 {
			row = append(row, "-")
		} else {
			row = append(row, fmt.Sprintf("**%.1f**", float64(m)/1024))
		}
	}
	rows = append(rows, row)
	return renderTable(rows, 1)
}

// medianRequests are the median count of each kind of request over the
// repetitions of c (nil when none were counted).
func (c *Cell) medianRequests() map[string]uint64 {
	if c == nil || len(c.Requests) == 0 {
		return nil
	}
	out := map[string]uint64{}
	for _, reps := range c.Requests {
		for op := range reps {
			out[op] = 0
		}
	}
	for op := range out {
		var xs []float64
		for _, reps := range c.Requests {
			xs = append(xs, float64(reps[op]))
		}
		if m := uint64(median(xs)); m > 0 {
			out[op] = m
		} else {
			delete(out, op)
		}
	}
	return out
}

// requestText is a cell of the requests table: the total, then the
// kinds that make up most of it, largest first.
func requestText(reqs map[string]uint64, kinds int) string {
	if reqs == nil {
		return "-"
	}
	type kv struct {
		op string
		n  uint64
	}
	var all []kv
	var total uint64
	for op, n := range reqs {
		all = append(all, kv{op, n})
		total += n
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].n != all[j].n {
			return all[i].n > all[j].n
		}
		return all[i].op < all[j].op
	})
	text := fmt.Sprint(total)
	var parts []string
	for i := 0; i < len(all) && i < kinds; i++ {
		parts = append(parts, fmt.Sprintf("%s %d", all[i].op, all[i].n))
	}
	if len(parts) > 0 {
		text += " (" + strings.Join(parts, ", ") + ")"
	}
	return text
}

// requestsTable renders the FUSE requests the layerfs servers got in the
// timed phase of each workload ("" when none were counted).
func (r *Results) requestsTable() string {
	var cols []string
	for _, c := range r.unionColumns() {
		for _, w := range r.Workloads {
			if w.Cells[c] != nil && len(w.Cells[c].Requests) > 0 {
				cols = append(cols, c)
				break
			}
		}
	}
	if len(cols) == 0 {
		return ""
	}
	rows := [][]string{append([]string{"requests"}, cols...)}
	for _, w := range r.Workloads {
		row := []string{w.Name}
		for _, c := range cols {
			row = append(row, requestText(w.Cells[c].medianRequests(), 3))
		}
		rows = append(rows, row)
	}
	return renderTable(rows, 1)
}

func maxInt(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// renderTable aligns a markdown table; columns from firstNum on are
// right-aligned.
func renderTable(rows [][]string, firstNum int) string {
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len(cell), 3)
		}
	}
	var b strings.Builder
	line := func(row []string) {
		b.WriteString("|")
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-len(cell))
			if i >= firstNum {
				b.WriteString(" " + pad + cell + " |")
			} else {
				b.WriteString(" " + cell + pad + " |")
			}
		}
		b.WriteString("\n")
	}
	line(rows[0])
	b.WriteString("|")
	for i, w := range widths {
		if i >= firstNum {
			b.WriteString(" " + strings.Repeat("-", w-1) + ": |")
		} else {
			b.WriteString(" " + strings.Repeat("-", w) + " |")
		}
	}
	b.WriteString("\n")
	for _, row := range rows[1:] {
		line(row)
	}
	return b.String()
}

// write stores results.json, results.md and ratios.svg in dir.
func (r *Results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "results.json"), append(raw, '\n')); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "results.md"), []byte(r.markdown())); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "ratios.svg"), renderSVG(r))
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (r *Results) markdown() string {
	var b strings.Builder
	m := r.Machine
	s := r.Settings
	fmt.Fprintf(&b, "# layerfs benchmark\n\n")
	fmt.Fprintf(&b, "Median wall time of %d repetition(s) per cell; ratios are to kernel overlay (lower is better, <1 is faster than the kernel). ", s.Reps)
	fmt.Fprintf(&b, "Every cell is a fresh upper, work dir and mount; only the workload is timed. ")
	fmt.Fprintf(&b, "\"error\" means at least one repetition failed (see Errors).\n\n")
	b.WriteString(r.markdownTable())
	b.WriteString("\n![ratio to kernel overlay per workload](ratios.svg)\n\n")
	if ab := r.abTable(); ab != "" {
		b.WriteString("## layerfs against layerfs-base\n\n")
		b.WriteString("Two layerfs builds in the same run: layerfs (after a change) and the --baseline binary (before it), mounted alike, their trials interleaved. ")
		b.WriteString("after/before is the ratio of the medians: below 1x the change made the workload faster. ")
		b.WriteString("\"repetitions\" says faster or slower when every repetition of one build beat every repetition of the other, overlap otherwise (\"-\" with a single repetition)")
		if n := s.Reps; n >= 2 {
			fmt.Fprintf(&b, "; with %d repetitions each, two identical builds still separate by chance on about one workload in %.0f", n, 1/chanceSeparate(n))
		}
		b.WriteString(".\n\n")
		b.WriteString(ab)
		b.WriteString("\n")
	}
	b.WriteString("## Peak RSS of the FUSE servers\n\nVmHWM of the server process read just before unmount, max over repetitions.\n\n")
	b.WriteString(r.rssTable())
	if t := r.requestsTable(); t != "" {
		b.WriteString("\n## FUSE requests\n\n")
		b.WriteString("Requests a layerfs server got during the timed phase, as it counts them (`layerfs inspect`), median over repetitions: the total, then the three largest kinds.\n\n")
		b.WriteString(t)
	}
	b.WriteString("\n## Machine\n\n")
	fmt.Fprintf(&b, "- date: %s\n", m.Date)
	fmt.Fprintf(&b, "- nproc: %d; CPU: %s; memory: %s\n", m.Nproc, m.CPU, m.MemTotal)
	fmt.Fprintf(&b, "- kernel: %s; data on: %s\n", m.Kernel, m.DataFS)
	if len(m.OverlayParams) > 0 {
		var ps []string
		for k, v := range m.OverlayParams {
			ps = append(ps, k+"="+v)
		}
		sort.Strings(ps)
		fmt.Fprintf(&b, "- kernel overlay module parameters: %s\n", strings.Join(ps, " "))
	}
	fmt.Fprintf(&b, "- kernel overlay mounted with: %s\n", KernelFeatures)
	fmt.Fprintf(&b, "- fuse-overlayfs: %s\n", m.FuseOverlayfsVersion)
	fmt.Fprintf(&b, "- layerfs: %s, commit %s (%s", m.LayerfsVersion, m.LayerfsCommit, m.LayerfsBinary)
	if len(r.LayerfsArgs) > 0 {
		fmt.Fprintf(&b, " run with %s", strings.Join(r.LayerfsArgs, " "))
	}
	b.WriteString(")\n")
	if m.BaseBinary != "" {
		fmt.Fprintf(&b, "- layerfs-base (--baseline): %s, commit %s (%s", m.BaseVersion, m.BaseCommit, m.BaseBinary)
		if len(r.BaseArgs) > 0 {
			fmt.Fprintf(&b, " run with %s", strings.Join(r.BaseArgs, " "))
		}
		b.WriteString(")\n")
	}
	var mts []string
	for _, c := range r.columns() {
		if ts := r.MountTypes[c]; len(ts) > 0 {
			mts = append(mts, c+": "+strings.Join(ts, ", "))
		}
	}
	if len(mts) > 0 {
		fmt.Fprintf(&b, "- mount types seen: %s\n", strings.Join(mts, "; "))
	}
	fmt.Fprintf(&b, "- Go: %s\n", m.GoVersion)
	fmt.Fprintf(&b, "- /proc/loadavg at start: %s; at end: %s\n", m.LoadAvgStart, m.LoadAvgEnd)
	fmt.Fprintf(&b, "- data set %q: tree of %d entries (%s in files), big file %s, tarball of %d entries; per-phase timeout %s\n",
		s.DataSet, s.TreeEntries, humanBytes(s.TreeBytes), humanBytes(s.BigFile), s.TarEntries, s.Timeout)
	if r.Elapsed != "" {
		fmt.Fprintf(&b, "- whole run took %s\n", r.Elapsed)
	}
	b.WriteString("\n## Workloads\n\n")
	b.WriteString("The union is `lowerdir=lower1:lower2`: lower1 holds `go/` (a copy of GOROOT) and `repo/` (a git repository), lower2 holds `big.bin`. ")
	b.WriteString("Cache \"cold\": `sync; echo 3 > /proc/sys/vm/drop_caches` just before the timed part; \"warm\": one untimed run of the same workload in the same mount first; \"no drop\": only `sync` first. ")
	b.WriteString("Before the trials of a workload in each repetition, the lower data it uses is read once, untimed, so that every contender finds it equally in the host's cache (a VM's disk cache on the host survives the guest's drop_caches).\n\n")
	rows := [][]string{{"workload", "cache", "what is timed", "what \"plain\" means"}}
	for _, w := range r.Workloads {
		rows = append(rows, []string{w.Name, w.Cache, w.Description, w.Plain})
	}
	b.WriteString(renderTable(rows, 99))
	var errs []string
	for _, w := range r.Workloads {
		for _, c := range r.columns() {
			cell := w.Cells[c]
			if cell == nil {
				continue
			}
			for _, e := range uniq(cell.Errors) {
				errs = append(errs, fmt.Sprintf("- %s on %s: %s", w.Name, c, strings.ReplaceAll(e, "\n", " ")))
			}
		}
	}
	if len(errs) > 0 {
		b.WriteString("\n## Errors\n\n")
		b.WriteString(strings.Join(errs, "\n") + "\n")
	}
	var warns []string
	for _, w := range r.Workloads {
		for _, c := range r.columns() {
			if cell := w.Cells[c]; cell != nil {
				for _, e := range uniq(cell.Warnings) {
					warns = append(warns, fmt.Sprintf("- %s on %s: %s", w.Name, c, e))
				}
			}
		}
	}
	if len(warns) > 0 {
		b.WriteString("\n## Warnings\n\nMarked * in the table: the timing stands, but this happened around it.\n\n")
		b.WriteString(strings.Join(warns, "\n") + "\n")
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			b.WriteString("- " + n + "\n")
		}
	}
	b.WriteString("\n## All repetitions (seconds)\n\n")
	rows = [][]string{append([]string{"workload"}, r.columns()...)}
	for _, w := range r.Workloads {
		row := []string{w.Name}
		for _, c := range r.columns() {
			cell := w.Cells[c]
			if cell == nil {
				row = append(row, "-")
				continue
			}
			var ts []string
			for _, t := range cell.Times {
				ts = append(ts, fmt.Sprintf("%.3f", t))
			}
			if n := len(cell.Errors); n > 0 {
				ts = append(ts, fmt.Sprintf("%d error(s)", n))
			}
			row = append(row, strings.Join(ts, " "))
		}
		rows = append(rows, row)
	}
	b.WriteString(renderTable(rows, 1))
	return b.String()
}

func uniq(xs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func machineInfo(b *bench) Machine {
	m := Machine{
		Date:         time.Now().Format(time.RFC3339),
		Nproc:        runtime.NumCPU(),
		GoVersion:    b.ds.spec.GoVersion,
		LoadAvgStart: loadAvg(),
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/version"); err == nil {
		m.Kernel += " " + strings.TrimSpace(string(raw))
	}
	m.CPU = firstField("/proc/cpuinfo", "model name")
	if kib := procMeminfo("MemTotal"); kib > 0 {
		m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
	}
	m.DataFS = fsOf(b.cfg.data)
	m.OverlayParams = map[string]string{}
	for _, p := range []string{"redirect_dir", "index", "metacopy", "xino_auto", "nfs_export"} {
		if raw, err := os.ReadFile("/sys/module/overlay/parameters/" + p); err == nil {
			m.OverlayParams[p] = strings.TrimSpace(string(raw))
		}
	}
	if b.fuseOv != "" {
		out, _ := exec.Command(b.fuseOv, "--version").CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "fuse-overlayfs") {
				m.FuseOverlayfsVersion = strings.TrimSpace(strings.TrimPrefix(l, "fuse-overlayfs:"))
			}
		}
		if m.FuseOverlayfsVersion == "" {
			m.FuseOverlayfsVersion = lastLines(string(out), 3)
		}
	}
	if b.layerfs != "" {
		m.LayerfsBinary = b.layerfs
		m.LayerfsCommit = layerfsCommit(b.layerfs)
		if out, err := exec.Command(b.layerfs, "--version").Output(); err == nil {
			m.LayerfsVersion = strings.TrimSpace(string(out))
		}
	}
	if b.baseline != "" {
		m.BaseBinary = b.baseline
		m.BaseCommit = layerfsCommit(b.baseline)
		if out, err := exec.Command(b.baseline, "--version").Output(); err == nil {
			m.BaseVersion = strings.TrimSpace(string(out))
		}
	}
	return m
}

// layerfsCommit reads the VCS stamp Go put in the binary, else asks git
// about the working directory.
func layerfsCommit(bin string) string {
	if info, err := buildinfo.ReadFile(bin); err == nil {
		var rev, modified string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			if modified == "true" {
				rev += " (uncommitted changes)"
			}
			return rev
		}
	}
	// Not stamped (GOFLAGS=-buildvcs=false, say): the repository holding
	// the binary, else the one we run in.
	for _, dir := range []string{filepath.Dir(bin), "."} {
		out, err := exec.Command("git", "-C", dir, "rev-parse", "HEAD").Output()
		if err != nil {
			continue
		}
		rev := strings.TrimSpace(string(out))
		where, _ := filepath.Abs(dir)
		if top, err := exec.Command("git", "-C", dir, "rev-parse", "--show-toplevel").Output(); err == nil {
			where = strings.TrimSpace(string(top))
		}
		note := "HEAD of " + where + " at benchmark time; the binary has no VCS stamp"
		if st, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			note += "; uncommitted changes"
		}
		return rev + " (" + note + ")"
	}
	return "unknown"
}

func firstField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func procMeminfo(key string) int64 {
	var n int64
	if v := firstField("/proc/meminfo", key); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}

// fsOf names the filesystem type and device of the mount holding path.
func fsOf(path string) string {
	out, err := exec.Command("findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", path).Output()
	if err != nil {
		return ""
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// busyNote warns when something else kept the CPUs busy as the run began.
func busyNote(load string) string {
	var one float64
	if _, err := fmt.Sscan(load, &one); err != nil || one < 1 {
		return ""
	}
	return fmt.Sprintf("the machine was busy when the run started (load average %s on %d CPUs): other processes compete with the servers, so expect noisy numbers", load, runtime.NumCPU())
}
