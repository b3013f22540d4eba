// A processor with state and an event-time timer (world processor), as
// examples/burst-count in Rust: it counts each key's records in the store
// `counts`; a key's first record sets a timer 10 s later (or `window_ms`),
// and when the stream time passes it the timer emits the key's count, at
// the timer's time, and forgets it.
package main

import (
	"strconv"

	weir "weir.local/guest"
)

type bursts struct{}

func (bursts) Process(r *weir.Record) ([]weir.Output, error) {
	if r.Key == nil {
		return nil, weir.Reject("burst-count needs keyed records")
	}
	var count int64
	if _, err := weir.StateGetJSON("counts", r.Key, &count); err != nil {
		return nil, err
	}
	if count == 0 {
		window := int64(10_000)
		if w, ok := weir.Config("window_ms"); ok {
			n, err := strconv.ParseInt(w, 10, 64)
			if err != nil {
				return nil, weir.Reject("window_ms: %v", err)
			}
			window = n
		}
		weir.AtEventTime(r.Timestamp+window, r.Key)
	}
	return nil, weir.StatePutJSON("counts", r.Key, count+1)
}

func (bursts) OnTimer(time int64, tag []byte) ([]weir.Output, error) {
	var count int64
	if _, err := weir.StateGetJSON("counts", tag, &count); err != nil {
		return nil, err
	}
	if err := weir.StateDelete("counts", tag); err != nil {
		return nil, err
	}
	return []weir.Output{weir.Keyed(tag, strconv.FormatInt(count, 10)).At(time)}, nil
}

func init() { weir.Process(bursts{}) }

func main() {}
