// {{name}}: a Weir joiner. The host keeps the join state and decides which
// records meet; this combines the two values.
package main

import weir "weir.local/guest"

// Joins the two values as "left|right" (a missing side is empty).
//
// Change this: return nil for a result without a value (a tombstone in a
// table join); an error rejects it.
func {{ident}}(p weir.Pair) ([]byte, error) {
	v := append([]byte{}, p.Left...)
	v = append(v, '|')
	return append(v, p.Right...), nil
}

func init() { weir.Join({{ident}}) }

func main() {}
