package weir

// The component's canonical-ABI glue: the exports of every world (a
// component keeps only those of its world), the imports, and cabi_realloc.
// Lists cross as a pointer and a length into this module's memory; a list
// the host passes in was allocated by cabi_realloc, and a list returned
// stays alive until the next call.

import "unsafe"

//go:wasmimport weir:functions/log@0.1.0 write
func wasmLogWrite(level uint32, ptr unsafe.Pointer, n uint32)

//go:wasmimport weir:functions/state@0.1.0 get
func wasmStateGet(s unsafe.Pointer, sn uint32, k unsafe.Pointer, kn uint32, ret unsafe.Pointer)

//go:wasmimport weir:functions/state@0.1.0 put
func wasmStatePut(s unsafe.Pointer, sn uint32, k unsafe.Pointer, kn uint32, v unsafe.Pointer, vn uint32, ret unsafe.Pointer)

//go:wasmimport weir:functions/state@0.1.0 delete
func wasmStateDelete(s unsafe.Pointer, sn uint32, k unsafe.Pointer, kn uint32, ret unsafe.Pointer)

//go:wasmimport weir:functions/state@0.1.0 range
func wasmStateRange(s unsafe.Pointer, sn uint32, hasStart uint32, start unsafe.Pointer, startN uint32,
	hasEnd uint32, end unsafe.Pointer, endN uint32, limit uint32, ret unsafe.Pointer)

//go:wasmimport weir:functions/timers@0.1.0 schedule
func wasmTimersSchedule(clock uint32, time int64, tag unsafe.Pointer, n uint32)

//go:wasmimport weir:functions/timers@0.1.0 cancel
func wasmTimersCancel(clock uint32, tag unsafe.Pointer, n uint32)

// Memory handed to the host by cabi_realloc, kept alive until the export
// call that receives it returns.
var lent [][]uint64

// The allocator the host uses for the lists it passes in (export
// parameters, import results). It is deliberately not named cabi_realloc:
// the WASI adapter would then allocate its own state with it, during
// _initialize, before Go's runtime can run Go code; without one the adapter
// uses memory.grow.
//
//go:wasmexport cabi_export_realloc
func cabiExportRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	return cabiRealloc(old, oldSize, align, newSize)
}

//go:wasmexport cabi_import_realloc
func cabiImportRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	return cabiRealloc(old, oldSize, align, newSize)
}

func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	if newSize == 0 {
		return unsafe.Pointer(uintptr(align))
	}
	// Words, so that every allocation is 8-byte aligned.
	b := make([]uint64, (newSize+7)/8)
	p := unsafe.Pointer(&b[0])
	if old != nil && oldSize > 0 {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), min(oldSize, newSize)))
	}
	lent = append(lent, b)
	return p
}

// The result of the last call, alive until the next one.
var (
	lastResult []byte
	retArea    [3]uint32
)

func bytesAt(p unsafe.Pointer, n uint32) []byte {
	if n == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(p), n)
}

func ptrOf(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func u32At(p unsafe.Pointer, off uintptr) uint32 {
	return *(*uint32)(unsafe.Add(p, off))
}

// Returns a list to the host.
func listResult(b []byte) unsafe.Pointer {
	lent = lent[:0]
	lastResult = b
	retArea[0] = uint32(uintptr(ptrOf(b)))
	retArea[1] = uint32(len(b))
	return unsafe.Pointer(&retArea)
}

var initResult [3]uint32

func initExport(list unsafe.Pointer, n uint32) unsafe.Pointer {
	entries := make([][2]string, n)
	for i := range entries {
		e := unsafe.Add(list, uintptr(i)*16)
		entries[i][0] = string(bytesAt(unsafe.Pointer(uintptr(u32At(e, 0))), u32At(e, 4)))
		entries[i][1] = string(bytesAt(unsafe.Pointer(uintptr(u32At(e, 8))), u32At(e, 12)))
	}
	setConfig(entries)
	lent = lent[:0]
	initResult[0] = 0
	return unsafe.Pointer(&initResult)
}

//go:wasmexport weir:functions/mapping@0.1.0#init
func mappingInit(p unsafe.Pointer, n uint32) unsafe.Pointer { return initExport(p, n) }

//go:wasmexport weir:functions/mapping@0.1.0#process
func mappingProcess(p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(mapBatch(bytesAt(p, n), registered.mapFn))
}

//go:wasmexport weir:functions/processing@0.1.0#init
func processingInit(p unsafe.Pointer, n uint32) unsafe.Pointer { return initExport(p, n) }

//go:wasmexport weir:functions/processing@0.1.0#process
func processingProcess(p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(mapBatch(bytesAt(p, n), registered.mapFn))
}

//go:wasmexport weir:functions/processing@0.1.0#on-timer
func processingOnTimer(time int64, p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(onTimer(time, bytesAt(p, n)))
}

//go:wasmexport weir:functions/joining@0.1.0#init
func joiningInit(p unsafe.Pointer, n uint32) unsafe.Pointer { return initExport(p, n) }

//go:wasmexport weir:functions/joining@0.1.0#join
func joiningJoin(p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(joinBatch(bytesAt(p, n)))
}

//go:wasmexport weir:functions/aggregation@0.1.0#init
func aggregationInit(p unsafe.Pointer, n uint32) unsafe.Pointer { return initExport(p, n) }

//go:wasmexport weir:functions/aggregation@0.1.0#add
func aggregationAdd(p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(registered.agg.add(bytesAt(p, n)))
}

//go:wasmexport weir:functions/aggregation@0.1.0#present
func aggregationPresent(p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(registered.agg.present(bytesAt(p, n)))
}

var mergeResult [3]uint32

//go:wasmexport weir:functions/aggregation@0.1.0#merge
func aggregationMerge(a unsafe.Pointer, an uint32, b unsafe.Pointer, bn uint32) unsafe.Pointer {
	merged, err := registered.agg.merge(bytesAt(a, an), bytesAt(b, bn))
	lent = lent[:0]
	if err != nil {
		msg := []byte(err.Error())
		lastResult = msg
		mergeResult[0] = 1
		mergeResult[1] = uint32(uintptr(ptrOf(msg)))
		mergeResult[2] = uint32(len(msg))
	} else {
		lastResult = merged
		mergeResult[0] = 0
		mergeResult[1] = uint32(uintptr(ptrOf(merged)))
		mergeResult[2] = uint32(len(merged))
	}
	return unsafe.Pointer(&mergeResult)
}

//go:wasmexport weir:functions/upgrading@0.1.0#state-format
func upgradingStateFormat() uint32 {
	lent = lent[:0]
	return registered.format
}

//go:wasmexport weir:functions/upgrading@0.1.0#upgrade
func upgradingUpgrade(from uint32, p unsafe.Pointer, n uint32) unsafe.Pointer {
	return listResult(upgradeBatch(from, bytesAt(p, n)))
}
