module weir.local/examples

go 1.24

require weir.local/guest v0.0.0

replace weir.local/guest => ../../guest-sdk/go
