module {{name}}

go 1.24

require weir.local/guest v0.0.0

// The Go SDK of the Weir repository this project was made from.
replace weir.local/guest => {{sdk}}/go
