module weir.local/guest

go 1.24
