// {{name}}: a Weir aggregator. The host keeps one accumulator per key (and
// window); this says how to start, add to and merge one.
package main

import (
	"strconv"

	weir "weir.local/guest"
)

// Sums the values (numbers) per key.
//
// Change this: the accumulator is any type encoding/json handles; Add
// returns the new one (an error rejects the record); Merge combines two; an
// optional Present(acc, key, window) says what is emitted (by default the
// accumulator as JSON).
type {{ident}} struct{}

func ({{ident}}) Init() float64 { return 0 }

func ({{ident}}) Add(total float64, r *weir.Record) (float64, error) {
	text, err := r.ValueText()
	if err != nil {
		return total, err
	}
	n, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return total, weir.Reject("not a number: %s", text)
	}
	return total + n, nil
}

func ({{ident}}) Merge(a, b float64) float64 { return a + b }

func init() { weir.Aggregate[float64]({{ident}}{}) }

func main() {}
