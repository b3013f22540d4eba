// Written from the docs alone, as an outside author would (tests/guests/
// outside-avg in Go): the average per key and window, presented as
// {"avg","count","key","start"}.
package main

import (
	"encoding/json"
	"strconv"
	"strings"

	weir "weir.local/guest"
)

type acc struct {
	Sum   float64 `json:"sum"`
	Count int64   `json:"count"`
}

type presented struct {
	Avg   float64 `json:"avg"`
	Count int64   `json:"count"`
	Key   string  `json:"key"`
	Start *int64  `json:"start"`
}

type avg struct{}

func (avg) Init() acc { return acc{} }

func (avg) Add(a acc, r *weir.Record) (acc, error) {
	text, err := r.ValueText()
	if err != nil {
		return a, err
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
	if err != nil {
		return a, weir.Reject("not a number: %s", text)
	}
	return acc{a.Sum + v, a.Count + 1}, nil
}

func (avg) Merge(a, b acc) acc { return acc{a.Sum + b.Sum, a.Count + b.Count} }

func (avg) Present(a acc, key []byte, w *weir.Window) ([]byte, error) {
	weir.Log.Info("presenting %s", key)
	out := presented{Avg: a.Sum / float64(a.Count), Count: a.Count, Key: string(key)}
	if w != nil {
		out.Start = &w.Start
	}
	return json.Marshal(out)
}

func init() { weir.Aggregate[acc](avg{}) }

func main() {}
