// Package weir is weir-guest for Go: write Weir stream functions as one
// plain function per record. It implements the packed batch encoding of
// wit/functions.wit (decode the record batch, call your function once per
// record, encode the result list) and the component's exports and imports,
// so you never see them.
//
//	package main
//
//	import weir "weir.local/guest"
//
//	func init() {
//		weir.Map(func(r *weir.Record) ([]weir.Output, error) {
//			return []weir.Output{weir.Forward(r).To("high")}, nil
//		})
//	}
//
//	func main() {}
//
// Build with guest-sdk/go/build.sh (see docs/guide-go.md): Go 1.24 or later
// compiles it for wasip1, and the build turns the module into a component
// that imports nothing but its world.
package weir

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A Record is an input record. Key and Value are nil for none (no key; a
// nil Value is a tombstone); they are borrowed from the batch and valid until
// your function returns (copy them to keep them).
type Record struct {
	// Offset is the position in the input partition (for `weir test`, the
	// line number).
	Offset int64
	// Timestamp is the event time, ms since the Unix epoch.
	Timestamp int64
	Key       []byte
	Value     []byte
	// Headers, in order.
	Headers []Header
}

// A Header is a record header: a name and a value.
type Header struct {
	Name  string
	Value []byte
}

// KeyText is the key as text; an error (which rejects the record) if there
// is none or it is not UTF-8.
func (r *Record) KeyText() (string, error) {
	if r.Key == nil {
		return "", errors.New("the record has no key")
	}
	if i := invalidUTF8(r.Key); i >= 0 {
		return "", fmt.Errorf("the key is not UTF-8: invalid byte at index %d", i)
	}
	return string(r.Key), nil
}

// ValueText is the value as text; an error if there is none (a tombstone) or
// it is not UTF-8.
func (r *Record) ValueText() (string, error) {
	if r.Value == nil {
		return "", errors.New("the record has no value (a tombstone)")
	}
	if i := invalidUTF8(r.Value); i >= 0 {
		return "", fmt.Errorf("the value is not UTF-8: invalid byte at index %d", i)
	}
	return string(r.Value), nil
}

// JSON parses the value as JSON into v.
func (r *Record) JSON(v any) error {
	if r.Value == nil {
		return errors.New("the record has no value (a tombstone)")
	}
	if err := json.Unmarshal(r.Value, v); err != nil {
		return fmt.Errorf("the value is not valid JSON: %w", err)
	}
	return nil
}

// Header is the value of the first header called name, or nil.
func (r *Record) Header(name string) []byte {
	for _, h := range r.Headers {
		if h.Name == name {
			return h.Value
		}
	}
	return nil
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		c, n := utf8.DecodeRune(b[i:])
		if c == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// Reject is an error that rejects the record with exactly this message
// (any error does; Reject formats like fmt.Sprintf).
func Reject(format string, args ...any) error {
	return errors.New(fmt.Sprintf(format, args...))
}

// Bytes is what keys and values may be given as: a string (sent as UTF-8)
// or bytes.
type Bytes interface{ ~string | ~[]byte }

// An Output is a record a function emits. Build one with Forward, Keyed or
// Value, then To, WithKey, WithValue, WithHeader, At.
type Output struct {
	to        *string
	key       []byte
	value     []byte
	headers   []Header
	timestamp int64
	timeSet   bool
}

// Forward is a copy of the input record: same key, value, headers and
// timestamp.
func Forward(r *Record) Output {
	return Output{key: r.Key, value: r.Value, headers: r.Headers, timestamp: r.Timestamp, timeSet: true}
}

// Keyed is an output with this key and value.
func Keyed[K, V Bytes](key K, value V) Output {
	return Output{key: []byte(key), value: []byte(value)}
}

// Value is an unkeyed output with this value.
func Value[V Bytes](value V) Output {
	return Output{value: []byte(value)}
}

// JSONValue is an unkeyed output whose value is v as JSON.
func JSONValue(v any) (Output, error) {
	b, err := json.Marshal(v)
	return Output{value: b}, err
}

// To sends the output to the named output name.
func (o Output) To(name string) Output { o.to = &name; return o }

// WithKey sets the key (nil: none).
func (o Output) WithKey(key []byte) Output { o.key = key; return o }

// WithValue sets the value (nil: a tombstone).
func (o Output) WithValue(value []byte) Output { o.value = value; return o }

// WithHeader adds a header.
func (o Output) WithHeader(name string, value []byte) Output {
	o.headers = append(o.headers[:len(o.headers):len(o.headers)], Header{name, value})
	return o
}

// At sets the event time (ms since the Unix epoch); by default it is the
// input record's.
func (o Output) At(timestamp int64) Output { o.timestamp = timestamp; o.timeSet = true; return o }

// A Window is a time window, [Start, End) in ms since the Unix epoch.
type Window struct{ Start, End int64 }

// A Pair holds the two sides of a join that met; Left or Right is nil when
// that side did not match (left or outer joins).
type Pair struct {
	Key         []byte
	Timestamp   int64
	Left, Right []byte
}

// An Aggregator says how to start, add to and merge an accumulator of type
// A, which the host stores (as JSON) per key and window. An error from Add
// rejects the record, which is then left out of every group; Add must then
// return the accumulator as it was. Implement Presenter too to choose what
// is emitted; by default the accumulator as JSON.
type Aggregator[A any] interface {
	Init() A
	Add(acc A, r *Record) (A, error)
	Merge(a, b A) A
}

// A Presenter turns an accumulator into the value emitted (nil: nothing).
// window is nil for an unwindowed aggregate.
type Presenter[A any] interface {
	Present(acc A, key []byte, window *Window) ([]byte, error)
}

// A Processor has full control, with state stores and timers: Process
// returns like a map function. Implement TimerHandler too to act on timers.
type Processor interface {
	Process(r *Record) ([]Output, error)
}

// A TimerHandler is called when a timer set with AtEventTime or AtWallClock
// fires.
type TimerHandler interface {
	OnTimer(time int64, tag []byte) ([]Output, error)
}

// A StateEntry is a stored state entry to convert to the module's format:
// Store ("" for an aggregator's accumulator), Key (the record key an
// accumulator groups, or the store key) and Value (the stored bytes, in the
// older format).
type StateEntry struct {
	Store string
	Key   []byte
	Value []byte
}

// An Upgrader is an Aggregator whose accumulator format changed between
// versions. StateFormat is the format this version writes (an aggregator
// that is not an Upgrader writes 0); when a step switches to it and its
// accumulators were written in another format, the host calls Upgrade for
// each: it returns the new accumulator (nil drops it), or an error, which
// refuses the switch.
type Upgrader[A any] interface {
	StateFormat() uint32
	Upgrade(from uint32, e StateEntry) (*A, error)
}

// A StoreUpgrader is a Processor whose stored values' format changed:
// Upgrade returns an entry's new value (nil deletes it).
type StoreUpgrader interface {
	StateFormat() uint32
	Upgrade(from uint32, e StateEntry) ([]byte, error)
}

// What the function registered (in an init function of package main).
var registered struct {
	mapFn   func(*Record) ([]Output, error)
	timer   TimerHandler
	joinFn  func(Pair) ([]byte, error)
	agg     aggregateRunner
	format  uint32
	upgrade func(from uint32, e StateEntry) ([]byte, error)
	already bool
}

func register() {
	if registered.already {
		panic("weir: a component holds one function: call one of Map, Aggregate, Join or Process, once")
	}
	registered.already = true
}

// Map registers a mapper (map, filter, flat-map, routing): f returns zero or
// more outputs, or an error, which rejects the record (it goes to the
// dead-letter output with the error's message). A panic does the same, with
// "panic: " and its value. Call it from an init function.
func Map(f func(r *Record) ([]Output, error)) {
	register()
	registered.mapFn = f
}

// Process registers a processor (world processor: state stores and timers).
func Process(p Processor) {
	register()
	registered.mapFn = p.Process
	if t, ok := p.(TimerHandler); ok {
		registered.timer = t
	}
	if u, ok := p.(StoreUpgrader); ok {
		registered.format = u.StateFormat()
		registered.upgrade = u.Upgrade
	}
}

// Join registers a joiner: f combines the two sides and returns the value
// (nil: a result without a value, a tombstone in a table join, as a Kafka
// Streams joiner's null), or an error, which rejects the pair.
func Join(f func(p Pair) ([]byte, error)) {
	register()
	registered.joinFn = f
}

// Aggregate registers an aggregator (world aggregator).
func Aggregate[A any](a Aggregator[A]) {
	register()
	agg := &aggregate[A]{impl: a}
	registered.agg = agg
	if u, ok := a.(Upgrader[A]); ok {
		registered.format = u.StateFormat()
		registered.upgrade = func(from uint32, e StateEntry) ([]byte, error) {
			acc, err := u.Upgrade(from, e)
			if err != nil || acc == nil {
				return nil, err
			}
			return agg.encode(*acc), nil
		}
	}
}

// ------------------------------------------------------------ settings and log

var (
	configEntries [][2]string
	configSet     bool
)

func setConfig(entries [][2]string) {
	// A second init on the same instance keeps the first settings.
	if !configSet {
		configEntries = entries
		configSet = true
	}
}

// Config is the step's setting name (`[steps.config]`, `weir test --config
// k=v`); the last setting of a name wins.
func Config(name string) (string, bool) {
	for i := len(configEntries) - 1; i >= 0; i-- {
		if configEntries[i][0] == name {
			return configEntries[i][1], true
		}
	}
	return "", false
}

// ConfigEntries is every setting, as name-value pairs in order.
func ConfigEntries() [][2]string { return append([][2]string(nil), configEntries...) }

type logger struct{}

// Log writes messages into the host's log, tagged with the module and the
// step: weir.Log.Info("seen %d", n).
var Log logger

func write(level uint32, format string, args []any) {
	m := fmt.Sprintf(format, args...)
	wasmLogWrite(level, strPtr(m), uint32(len(m)))
}

func (logger) Trace(format string, args ...any) { write(0, format, args) }
func (logger) Debug(format string, args ...any) { write(1, format, args) }
func (logger) Info(format string, args ...any)  { write(2, format, args) }
func (logger) Warn(format string, args ...any)  { write(3, format, args) }
func (logger) Error(format string, args ...any) { write(4, format, args) }
