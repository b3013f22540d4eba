// A per-key counter kept in the state store `counts` (world processor): each
// record's count so far under its key is emitted as the value "key=N".
// The pipeline declares the store; the host commits it with each batch.
package main

import (
	"fmt"

	weir "weir.local/guest"
)

type counter struct{}

func (counter) Process(r *weir.Record) ([]weir.Output, error) {
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

func init() { weir.Process(counter{}) }

func main() {}
