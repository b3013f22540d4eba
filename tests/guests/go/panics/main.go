// A test guest that panics: "boom" panics with a message of its own, "zero"
// makes the runtime panic (an integer divide by zero); anything else is
// forwarded.
package main

import (
	"fmt"

	weir "weir.local/guest"
)

var zero = 0

func forward(r *weir.Record) ([]weir.Output, error) {
	v, err := r.ValueText()
	if err != nil {
		return nil, err
	}
	switch v {
	case "boom":
		panic(fmt.Sprintf("boom at offset %d", r.Offset))
	case "zero":
		return []weir.Output{weir.Forward(r).WithValue([]byte(fmt.Sprint(1 / zero)))}, nil
	}
	return []weir.Output{weir.Forward(r)}, nil
}

func init() { weir.Map(forward) }

func main() {}
