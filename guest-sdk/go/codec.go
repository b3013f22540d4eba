package weir

// The packed encoding of wit/functions.wit, and the batch loops of the four
// kinds of function.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
)

const none = 0xffffffff

type reader struct {
	b []byte
	p int
}

func (r *reader) need(n int) {
	if n < 0 || r.p+n > len(r.b) {
		panic(fmt.Sprintf("weir: the host sent a malformed batch (needed %d bytes at offset %d, length %d)", n, r.p, len(r.b)))
	}
}

func (r *reader) u32() uint32 {
	r.need(4)
	x := binary.LittleEndian.Uint32(r.b[r.p:])
	r.p += 4
	return x
}

func (r *reader) i64() int64 {
	r.need(8)
	x := int64(binary.LittleEndian.Uint64(r.b[r.p:]))
	r.p += 8
	return x
}

func (r *reader) take(n uint32) []byte {
	r.need(int(n))
	s := r.b[r.p : r.p+int(n) : r.p+int(n)]
	r.p += int(n)
	return s
}

func (r *reader) bytes() []byte { return r.take(r.u32()) }

func (r *reader) optBytes() []byte {
	n := r.u32()
	if n == none {
		return nil
	}
	return r.take(n)
}

func (r *reader) record() Record {
	rec := Record{Offset: r.i64(), Timestamp: r.i64(), Key: r.optBytes(), Value: r.optBytes()}
	if n := r.u32(); n > 0 {
		rec.Headers = make([]Header, n)
		for i := range rec.Headers {
			rec.Headers[i].Name = string(r.bytes())
			rec.Headers[i].Value = r.bytes()
		}
	}
	return rec
}

type writer struct {
	b     []byte
	count uint32
}

func newWriter(capacity int) *writer {
	return &writer{b: make([]byte, 4, max(capacity, 64))}
}

func (w *writer) u32(x uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, x) }
func (w *writer) i64(x int64)  { w.b = binary.LittleEndian.AppendUint64(w.b, uint64(x)) }

func (w *writer) bytes(b []byte) {
	if uint64(len(b)) >= none {
		panic("weir: a key, value or header is larger than 4 GiB")
	}
	w.u32(uint32(len(b)))
	w.b = append(w.b, b...)
}

func (w *writer) optBytes(b []byte) {
	if b == nil {
		w.u32(none)
	} else {
		w.bytes(b)
	}
}

func (w *writer) entry(tag byte, index uint32) {
	w.count++
	w.b = append(w.b, tag)
	w.u32(index)
}

func (w *writer) output(index uint32, o *Output, ts int64) {
	w.entry(0, index)
	if o.to == nil {
		w.u32(none)
	} else {
		w.bytes([]byte(*o.to))
	}
	if o.timeSet {
		ts = o.timestamp
	}
	w.i64(ts)
	w.optBytes(o.key)
	w.optBytes(o.value)
	w.u32(uint32(len(o.headers)))
	for _, h := range o.headers {
		w.bytes([]byte(h.Name))
		w.bytes(h.Value)
	}
}

func (w *writer) rejected(index uint32, message string) {
	w.entry(1, index)
	w.bytes([]byte(message))
}

func (w *writer) finish() []byte {
	binary.LittleEndian.PutUint32(w.b, w.count)
	return w.b
}

// guard runs f, turning a panic into an error "panic: VALUE".
func guard(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

func noFunction(kind string) error {
	return fmt.Errorf("weir: no %s registered: call weir.%s in an init function of package main", kind, kind)
}

func mapBatch(batch []byte, f func(*Record) ([]Output, error)) []byte {
	r := reader{b: batch}
	n := r.u32()
	w := newWriter(len(batch) + 64)
	for i := uint32(0); i < n; i++ {
		rec := r.record()
		var outs []Output
		err := guard(func() (err error) {
			if f == nil {
				return noFunction("Map")
			}
			outs, err = f(&rec)
			return err
		})
		if err != nil {
			w.rejected(i, err.Error())
			continue
		}
		for k := range outs {
			w.output(i, &outs[k], rec.Timestamp)
		}
	}
	return w.finish()
}

func onTimer(time int64, tag []byte) []byte {
	w := newWriter(64)
	var outs []Output
	err := guard(func() (err error) {
		if registered.timer != nil {
			outs, err = registered.timer.OnTimer(time, tag)
		}
		return err
	})
	if err != nil {
		w.rejected(0, err.Error())
	} else {
		for k := range outs {
			w.output(0, &outs[k], time)
		}
	}
	return w.finish()
}

func joinBatch(batch []byte) []byte {
	r := reader{b: batch}
	n := r.u32()
	w := newWriter(len(batch) + 64)
	for i := uint32(0); i < n; i++ {
		p := Pair{Key: r.optBytes(), Timestamp: r.i64(), Left: r.optBytes(), Right: r.optBytes()}
		var v []byte
		err := guard(func() (err error) {
			if registered.joinFn == nil {
				return noFunction("Join")
			}
			v, err = registered.joinFn(p)
			return err
		})
		if err != nil {
			w.rejected(i, err.Error())
		} else {
			w.entry(3, i)
			w.optBytes(v)
		}
	}
	return w.finish()
}

func upgradeBatch(from uint32, batch []byte) []byte {
	r := reader{b: batch}
	n := r.u32()
	w := newWriter(len(batch) + 64)
	for i := uint32(0); i < n; i++ {
		e := StateEntry{Store: string(r.bytes()), Key: r.optBytes(), Value: r.bytes()}
		var v []byte
		err := guard(func() (err error) {
			if registered.upgrade == nil {
				return fmt.Errorf("this module registered no upgrade")
			}
			v, err = registered.upgrade(from, e)
			return err
		})
		if err != nil {
			w.rejected(i, err.Error())
		} else {
			w.entry(3, i)
			w.optBytes(v)
		}
	}
	return w.finish()
}

type aggregateRunner interface {
	add(batch []byte) []byte
	merge(a, b []byte) ([]byte, error)
	present(batch []byte) []byte
}

type aggregate[A any] struct{ impl Aggregator[A] }

func (a *aggregate[A]) decode(b []byte) A {
	if b == nil {
		return a.impl.Init()
	}
	var acc A
	if err := json.Unmarshal(b, &acc); err != nil {
		panic(fmt.Sprintf("stored accumulator does not decode: %v", err))
	}
	return acc
}

func (a *aggregate[A]) encode(acc A) []byte {
	b, err := json.Marshal(acc)
	if err != nil {
		panic(fmt.Sprintf("the accumulator does not encode as JSON: %v", err))
	}
	return b
}

func (a *aggregate[A]) add(batch []byte) []byte {
	r := reader{b: batch}
	n := r.u32()
	records := make([]Record, n)
	for i := range records {
		records[i] = r.record()
	}
	type group struct {
		acc     []byte
		members []uint32
	}
	groups := make([]group, r.u32())
	for g := range groups {
		groups[g].acc = r.optBytes()
		groups[g].members = make([]uint32, r.u32())
		for m := range groups[g].members {
			k := r.u32()
			if k >= n {
				panic(fmt.Sprintf("weir: the host sent a group member %d out of range", k))
			}
			groups[g].members[m] = k
		}
	}
	// A record rejected in one group is left out of every group: rerun until
	// no new rejection appears (one pass when none is rejected).
	rejected := map[uint32]string{}
	accs := make([]A, len(groups))
	for {
		before := len(rejected)
		for g := range groups {
			acc := a.decode(groups[g].acc)
			for _, k := range groups[g].members {
				if _, ok := rejected[k]; ok {
					continue
				}
				err := guard(func() (err error) {
					next, err := a.impl.Add(acc, &records[k])
					if err == nil {
						acc = next
					}
					return err
				})
				if err != nil {
					rejected[k] = err.Error()
				}
			}
			accs[g] = acc
		}
		if len(rejected) == before {
			break
		}
	}
	w := newWriter(64 * (len(groups) + 1))
	keys := make([]uint32, 0, len(rejected))
	for k := range rejected {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		w.rejected(k, rejected[k])
	}
	for g, acc := range accs {
		w.entry(2, uint32(g))
		w.bytes(a.encode(acc))
	}
	return w.finish()
}

func (a *aggregate[A]) merge(x, y []byte) (out []byte, err error) {
	err = guard(func() error {
		out = a.encode(a.impl.Merge(a.decode(x), a.decode(y)))
		return nil
	})
	return out, err
}

func (a *aggregate[A]) present(batch []byte) []byte {
	r := reader{b: batch}
	n := r.u32()
	w := newWriter(64 * (int(n) + 1))
	presenter, custom := a.impl.(Presenter[A])
	for i := uint32(0); i < n; i++ {
		key := r.optBytes()
		start, end := r.i64(), r.i64()
		stored := r.bytes()
		var window *Window
		if start != 0 || end != 0 {
			window = &Window{start, end}
		}
		var v []byte
		err := guard(func() (err error) {
			acc := a.decode(stored)
			if custom {
				v, err = presenter.Present(acc, key, window)
			} else {
				v = a.encode(acc)
			}
			return err
		})
		if err != nil {
			w.rejected(i, err.Error())
		} else {
			w.entry(3, i)
			w.optBytes(v)
		}
	}
	return w.finish()
}
