// Joins two JSON values (world joiner), as examples/merge-json does in Rust:
// the left one must be a JSON object (or nothing, in an outer join: then an
// empty one); the right one (or null when nothing matched; a JSON string
// when it is not JSON) goes into it under the field named by the `field`
// setting (default "right"). The result's fields are in name order.
package main

import (
	"encoding/json"

	weir "weir.local/guest"
)

func merge(p weir.Pair) ([]byte, error) {
	field, ok := weir.Config("field")
	if !ok {
		field = "right"
	}
	obj := map[string]json.RawMessage{}
	if p.Left != nil {
		// "null" would leave the map nil: not an object either.
		if err := json.Unmarshal(p.Left, &obj); err != nil || obj == nil {
			return nil, weir.Reject("the left side is not a JSON object")
		}
	}
	right := json.RawMessage("null")
	if p.Right != nil {
		if json.Valid(p.Right) {
			right = json.RawMessage(p.Right)
		} else {
			text, err := json.Marshal(string(p.Right))
			if err != nil {
				return nil, err
			}
			right = text
		}
	}
	obj[field] = right
	return json.Marshal(obj)
}

func init() { weir.Join(merge) }

func main() {}
