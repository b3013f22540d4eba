// {{name}}: a Weir mapper. Each record in gives zero or more outputs.
package main

import (
	"strings"

	weir "weir.local/guest"
)

// Upper-cases each value and keeps the key, headers and timestamp.
//
// Change this: return nil to drop a record, several outputs to split one,
// weir.Forward(r).To("name") to route it to a named output, or an error
// (weir.Reject("why")) to send it to the dead letters with that message.
func {{ident}}(r *weir.Record) ([]weir.Output, error) {
	text, err := r.ValueText()
	if err != nil {
		return nil, err
	}
	return []weir.Output{weir.Forward(r).WithValue([]byte(strings.ToUpper(text)))}, nil
}

func init() { weir.Map({{ident}}) }

func main() {}
