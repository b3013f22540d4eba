// tests/guests/count-v3 in Go: counts records per key, kept as
// {"count": N} (state format 1), and upgrades the plain numbers that
// examples/count stored (format 0).
package main

import (
	"encoding/json"

	weir "weir.local/guest"
)

type tally struct {
	Count uint64 `json:"count"`
}

type countV3 struct{}

func (countV3) Init() tally { return tally{} }

func (countV3) Add(t tally, r *weir.Record) (tally, error) { return tally{t.Count + 1}, nil }

func (countV3) Merge(a, b tally) tally { return tally{a.Count + b.Count} }

func (countV3) StateFormat() uint32 { return 1 }

func (countV3) Upgrade(from uint32, e weir.StateEntry) (*tally, error) {
	if from != 0 {
		return nil, weir.Reject("unknown state format %d", from)
	}
	var n uint64
	if err := json.Unmarshal(e.Value, &n); err != nil {
		return nil, weir.Reject("not a count: %s", e.Value)
	}
	return &tally{n}, nil
}

func init() { weir.Aggregate[tally](countV3{}) }

func main() {}
