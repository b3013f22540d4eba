// {{name}}: a Weir processor, with state stores and timers.
package main

import (
	"fmt"

	weir "weir.local/guest"
)

// Counts records per key in the state store `counts` (declare it in the
// pipeline file) and emits "key=N".
//
// Change this: Process returns outputs like a map function; add a method
// OnTimer(time int64, tag []byte) ([]weir.Output, error) to act on timers set
// with weir.AtEventTime(...).
type {{ident}} struct{}

func ({{ident}}) Process(r *weir.Record) ([]weir.Output, error) {
	key := ""
	if r.Key != nil {
		k, err := r.KeyText()
		if err != nil {
			return nil, err
		}
		key = k
	}
	var n int64
	if _, err := weir.StateGetJSON("counts", []byte(key), &n); err != nil {
		return nil, err
	}
	n++
	if err := weir.StatePutJSON("counts", []byte(key), n); err != nil {
		return nil, err
	}
	return []weir.Output{weir.Keyed(r.Key, fmt.Sprintf("%s=%d", key, n))}, nil
}

func init() { weir.Process({{ident}}{}) }

func main() {}
