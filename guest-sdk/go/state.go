package weir

// State stores and timers, for processors (world processor) only: a
// function of another world that calls them does not build into a
// component, because its world has no state or timers.

import (
	"encoding/json"
	"fmt"
	"unsafe"
)

// An Entry is a key and its value in a state store.
type Entry struct{ Key, Value []byte }

var stateRet [4]uint32

func stateError(store string) error {
	ret := unsafe.Pointer(&stateRet)
	msg := string(bytesAt(unsafe.Pointer(uintptr(u32At(ret, 8))), u32At(ret, 12)))
	if *(*uint8)(unsafe.Add(ret, 4)) == 0 {
		return fmt.Errorf("no state store named `%s`: declare it in the pipeline file", msg)
	}
	return fmt.Errorf("state store `%s`: %s", store, msg)
}

func failed() bool { return *(*uint8)(unsafe.Pointer(&stateRet)) != 0 }

// StateGet is the value of key in store; ok is false when it has none.
func StateGet(store string, key []byte) (value []byte, ok bool, err error) {
	wasmStateGet(strPtr(store), uint32(len(store)), ptrOf(key), uint32(len(key)), unsafe.Pointer(&stateRet))
	if failed() {
		return nil, false, stateError(store)
	}
	ret := unsafe.Pointer(&stateRet)
	if *(*uint8)(unsafe.Add(ret, 4)) == 0 {
		return nil, false, nil
	}
	return bytesAt(unsafe.Pointer(uintptr(u32At(ret, 8))), u32At(ret, 12)), true, nil
}

// StatePut sets key in store to value.
func StatePut(store string, key, value []byte) error {
	wasmStatePut(strPtr(store), uint32(len(store)), ptrOf(key), uint32(len(key)), ptrOf(value), uint32(len(value)),
		unsafe.Pointer(&stateRet))
	if failed() {
		return stateError(store)
	}
	return nil
}

// StateDelete removes key from store.
func StateDelete(store string, key []byte) error {
	wasmStateDelete(strPtr(store), uint32(len(store)), ptrOf(key), uint32(len(key)), unsafe.Pointer(&stateRet))
	if failed() {
		return stateError(store)
	}
	return nil
}

// StateRange is up to limit entries of store with start <= key < end (nil:
// no bound), in key order.
func StateRange(store string, start, end []byte, limit uint32) ([]Entry, error) {
	has := func(b []byte) uint32 {
		if b == nil {
			return 0
		}
		return 1
	}
	wasmStateRange(strPtr(store), uint32(len(store)), has(start), ptrOf(start), uint32(len(start)),
		has(end), ptrOf(end), uint32(len(end)), limit, unsafe.Pointer(&stateRet))
	if failed() {
		return nil, stateError(store)
	}
	ret := unsafe.Pointer(&stateRet)
	list, n := unsafe.Pointer(uintptr(u32At(ret, 4))), u32At(ret, 8)
	entries := make([]Entry, n)
	for i := range entries {
		e := unsafe.Add(list, uintptr(i)*16)
		entries[i].Key = bytesAt(unsafe.Pointer(uintptr(u32At(e, 0))), u32At(e, 4))
		entries[i].Value = bytesAt(unsafe.Pointer(uintptr(u32At(e, 8))), u32At(e, 12))
	}
	return entries, nil
}

// StateGetJSON parses the value of key in store as JSON into v; ok is false
// when it has none.
func StateGetJSON(store string, key []byte, v any) (ok bool, err error) {
	b, ok, err := StateGet(store, key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("state store `%s`: the value is not valid JSON: %w", store, err)
	}
	return true, nil
}

// StatePutJSON sets key in store to v as JSON.
func StatePutJSON(store string, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return StatePut(store, key, b)
}

// AtEventTime fires tag when the partition's stream time reaches time (ms).
// A tag is one timer per clock: setting it again moves it.
func AtEventTime(time int64, tag []byte) { wasmTimersSchedule(0, time, ptrOf(tag), uint32(len(tag))) }

// AtWallClock fires tag when the wall clock reaches time (ms).
func AtWallClock(time int64, tag []byte) { wasmTimersSchedule(1, time, ptrOf(tag), uint32(len(tag))) }

// CancelEventTime cancels an event-time timer.
func CancelEventTime(tag []byte) { wasmTimersCancel(0, ptrOf(tag), uint32(len(tag))) }

// CancelWallClock cancels a wall-clock timer.
func CancelWallClock(tag []byte) { wasmTimersCancel(1, ptrOf(tag), uint32(len(tag))) }
