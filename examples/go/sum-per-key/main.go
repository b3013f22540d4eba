// A sum per key (world aggregator): the value of each record is a number;
// the host keeps one sum per key and window (tumbling windows come from the
// pipeline file) and emits it when the window closes.
package main

import (
	"strconv"

	weir "weir.local/guest"
)

type sum struct{}

func (sum) Init() float64 { return 0 }

func (sum) Add(total float64, r *weir.Record) (float64, error) {
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

func (sum) Merge(a, b float64) float64 { return a + b }

func init() { weir.Aggregate[float64](sum{}) }

func main() {}
