// Word count's first step: a line becomes one record per lower-cased word,
// keyed by the word (the value is the word too), dropping "the". A word is a
// maximal run of letters and digits.
package main

import (
	"strings"
	"unicode"

	weir "weir.local/guest"
)

// A letter or digit, as Rust's char::is_alphanumeric.
func alnum(c rune) bool {
	return unicode.IsLetter(c) || unicode.IsNumber(c) || unicode.Is(unicode.Other_Alphabetic, c) || unicode.Is(unicode.Nl, c)
}

func split(r *weir.Record) ([]weir.Output, error) {
	line, err := r.ValueText()
	if err != nil {
		return nil, err
	}
	var outs []weir.Output
	for _, w := range strings.FieldsFunc(strings.ToLower(line), func(c rune) bool { return !alnum(c) }) {
		if w != "the" {
			outs = append(outs, weir.Keyed(w, w))
		}
	}
	return outs, nil
}

func init() { weir.Map(split) }

func main() {}
