// The log router: JSON log lines whose `level` is "ERROR" go to the output
// `high`, every other line to `low`. A value that is not a JSON object (with
// a string `level`, if it has one) is rejected, so it lands in the
// dead-letter output with the reason.
package main

import (
	"encoding/json"

	weir "weir.local/guest"
)

func route(r *weir.Record) ([]weir.Output, error) {
	var line map[string]json.RawMessage
	var level *string
	if r.JSON(&line) != nil || line == nil || (line["level"] != nil && json.Unmarshal(line["level"], &level) != nil) {
		return nil, weir.Reject(`not a JSON log line: expected an object such as {"level":"ERROR",...}`)
	}
	to := "low"
	if level != nil && *level == "ERROR" {
		to = "high"
	}
	return []weir.Output{weir.Forward(r).To(to)}, nil
}

func init() { weir.Map(route) }

func main() {}
