package difftest

import (
	"fmt"
	"path/filepath"
	"time"
)

// Shrinker reduces a divergence to a small reproducing case: delta
// debugging over the ops, then dropping stack entries one by one, then the
// ops once more. A candidate reproduces when a fresh run shows a
// divergence with the same signature.
type Shrinker struct {
	Scratch  string    // parent dir for the trial runs
	Deadline time.Time // stop shrinking (keep the best so far) after this
	Log      func(string, ...any)
	// NoBugSkips: as Run.NoBugSkips.
	NoBugSkips bool
	Unskip     string

	runs int
}

func (s *Shrinker) try(d *Divergence, stack *Stack, ops []Op) *Divergence {
	if time.Now().After(s.Deadline) {
		return nil
	}
	s.runs++
	r := &Run{Dir: filepath.Join(s.Scratch, fmt.Sprintf("shrink%d", s.runs)), Seed: d.Seed, Stack: stack, Ops: ops, NoBugSkips: s.NoBugSkips, Unskip: s.Unskip}
	nd, err := r.Execute()
	if err != nil || nd == nil || nd.Sig != d.Sig {
		return nil
	}
	return nd
}

// Shrink returns the smallest reproduction it found (d itself at worst).
func (s *Shrinker) Shrink(d *Divergence) *Divergence {
	best := d
	best = s.ddmin(best)
	for changed := true; changed && time.Now().Before(s.Deadline); {
		changed = false
		for i := len(best.Stack.Entries) - 1; i >= 0; i-- {
			if i >= len(best.Stack.Entries) {
				continue
			}
			if nd := s.try(best, best.Stack.without(i), best.Ops); nd != nil {
				best, changed = nd, true
			}
		}
	}
	best = s.ddmin(best)
	best = s.simplify(best)
	if s.Log != nil {
		s.Log("shrunk %s in %d runs: %d ops, %d stack entries", d.Sig, s.runs, len(best.Ops), len(best.Stack.Entries))
	}
	return best
}

// ddmin is Zeller's delta debugging over the op list: remove chunks of
// decreasing size while the divergence persists.
func (s *Shrinker) ddmin(best *Divergence) *Divergence {
	n := 2
	for len(best.Ops) >= 1 && time.Now().Before(s.Deadline) {
		ops := best.Ops
		if n > len(ops) {
			n = len(ops)
		}
		chunk := (len(ops) + n - 1) / n
		reduced := false
		for start := 0; start < len(ops); start += chunk {
			end := min(start+chunk, len(ops))
			cand := append(append([]Op(nil), ops[:start]...), ops[end:]...)
			if nd := s.try(best, best.Stack, cand); nd != nil {
				best, reduced = nd, true
				break
			}
		}
		if reduced {
			n = max(n-1, 2)
			continue
		}
		if n >= len(ops) {
			break
		}
		n = min(2*n, len(ops))
	}
	return best
}

// simplify makes what is left plainer where the divergence stays: each
// op as root in the tester (else without supplementary groups, without
// its umask), each stack entry without its ACLs.
func (s *Shrinker) simplify(best *Divergence) *Divergence {
	for i := 0; i < len(best.Ops); i++ { // a simpler op may diverge sooner
		o := best.Ops[i]
		var cands []Op
		if o.As != nil || o.Umask != 0 {
			c := o
			c.As, c.Umask = nil, 0
			cands = append(cands, c)
		}
		if o.As != nil && len(o.As.Groups) > 0 {
			c := o
			c.As = &Cred{Uid: o.As.Uid, Gid: o.As.Gid}
			cands = append(cands, c)
		}
		if o.Umask != 0 {
			c := o
			c.Umask = 0
			cands = append(cands, c)
		}
		for _, c := range cands {
			ops := append([]Op(nil), best.Ops...)
			ops[i] = c
			if nd := s.try(best, best.Stack, ops); nd != nil {
				best = nd
				break
			}
		}
	}
	if best.Stack.Root != nil {
		st := &Stack{Layers: best.Stack.Layers, Entries: best.Stack.Entries}
		if nd := s.try(best, st, best.Ops); nd != nil {
			best = nd
		}
	}
	for i, e := range best.Stack.Entries {
		if e.ACL == "" && e.DefACL == "" {
			continue
		}
		for _, drop := range [][2]bool{{true, true}, {true, false}, {false, true}} {
			st := &Stack{Layers: best.Stack.Layers, Root: best.Stack.Root, Entries: append([]Entry(nil), best.Stack.Entries...)}
			if drop[0] {
				st.Entries[i].ACL = ""
			}
			if drop[1] {
				st.Entries[i].DefACL = ""
			}
			if st.Entries[i].String() == e.String() {
				continue
			}
			if nd := s.try(best, st, best.Ops); nd != nil {
				best = nd
				break
			}
		}
	}
	return best
}
