/* weir-guest for C: write Weir stream functions as one plain function per
 * record. The SDK's C files beside this header (weir.c and weir-*.c, which
 * build.sh compiles with yours) implement the packed batch encoding of
 * wit/functions.wit (decode the record batch, call your function once per
 * record, encode the result list) and the component's exports and imports,
 * so you never see them.
 *
 *   #include "weir.h"
 *
 *   static weir_status shout(const weir_record *r, weir_out *out) {
 *       weir_emit(out, weir_to(weir_forward(r), "high"));
 *       return WEIR_OK;
 *   }
 *   WEIR_MAP(shout)
 *
 * Build with guest-sdk/c/build.sh (see docs/guide-c.md). The SDK needs no
 * WASI: a function that uses only it, malloc and <string.h> makes a
 * component with no WASI imports at all. */
#ifndef WEIR_H
#define WEIR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ bytes */

/** Bytes borrowed from the batch (or from your code). `ptr == NULL` is
 * none: no key, or a tombstone value. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} weir_bytes;

/** None: no key, a tombstone value, an unbounded range end. */
#define WEIR_NONE ((weir_bytes){NULL, 0})

/** The bytes of a NUL-terminated string (without the NUL); NULL gives none. */
weir_bytes weir_str(const char *s);
/** `n` bytes at `p`. */
weir_bytes weir_bytes_of(const void *p, size_t n);
/** Whether `b` is none. */
static inline bool weir_is_none(weir_bytes b) { return b.ptr == NULL; }
/** Whether `b` holds exactly the bytes of the string `s`. */
bool weir_bytes_eq(weir_bytes b, const char *s);

/* ------------------------------------------------------------ abort */

/** What abort() is in code that includes this header: it traps as the C
 * library's abort() does, after writing "weir-guest: abort() called while
 * processing the record at offset N" to stderr, which the host puts into the
 * dead letter's reason. Writing to stderr is the one thing that gives a
 * component WASI imports; a component that never calls abort() has none. */
__attribute__((noreturn)) void weir_abort(void);
#define abort weir_abort

/* ------------------------------------------------------------ records */

/** A header: a name (UTF-8) and a value. */
typedef struct {
    weir_bytes name;
    weir_bytes value;
} weir_header;

/** An input record; everything in it is borrowed from the batch and valid
 * until your function returns. */
typedef struct {
    /** Position in the input partition (for `weir test`, the line number). */
    int64_t offset;
    /** Event time, ms since the Unix epoch. */
    int64_t timestamp;
    /** The key; none for an unkeyed record. */
    weir_bytes key;
    /** The value; none is a tombstone. */
    weir_bytes value;
    /** The headers, in order. */
    size_t header_count;
    const weir_header *headers;
} weir_record;

/** The value of the first header called `name`, or none. */
weir_bytes weir_header_get(const weir_record *r, const char *name);

/** What a function returns: WEIR_OK, or WEIR_REJECTED (from weir_reject). */
typedef enum { WEIR_OK = 0, WEIR_REJECTED = 1 } weir_status;

/** Rejects the record being processed: it goes to the dead-letter output
 * with this message. A printf-like format: %s, %.*s, %c, %d, %i, %u, %x,
 * with l, ll and z; %% (no floating point). Returns WEIR_REJECTED:
 * `return weir_reject("bad value %.*s", (int)v.len, v.ptr);` */
weir_status weir_reject(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** The value as UTF-8 text into `*text`; rejects (and returns
 * WEIR_REJECTED) if there is none (a tombstone) or it is not UTF-8. */
weir_status weir_value_text(const weir_record *r, weir_bytes *text);
/** The key as UTF-8 text into `*text`; rejects if there is none or it is
 * not UTF-8. */
weir_status weir_key_text(const weir_record *r, weir_bytes *text);

/* ------------------------------------------------------------ outputs */

/** Keeps the input record's event time (the default). */
#define WEIR_INPUT_TIME INT64_MIN

/** A record a function emits. The bytes it points to need only live until
 * weir_emit returns: weir_emit copies them. */
typedef struct {
    /** The named output it goes to; NULL is the step's default output. */
    const char *to;
    weir_bytes key;
    weir_bytes value;
    /** Event time; WEIR_INPUT_TIME keeps the input record's. */
    int64_t timestamp;
    size_t header_count;
    const weir_header *headers;
} weir_output;

/** A copy of the input record: same key, value, headers and timestamp. */
weir_output weir_forward(const weir_record *r);
/** An output with this key and value. */
weir_output weir_keyed(weir_bytes key, weir_bytes value);
/** An unkeyed output with this value. */
weir_output weir_value(weir_bytes value);
/** `o` sent to the named output `name`. */
static inline weir_output weir_to(weir_output o, const char *name) { o.to = name; return o; }
/** `o` with this key. */
static inline weir_output weir_with_key(weir_output o, weir_bytes key) { o.key = key; return o; }
/** `o` with this value. */
static inline weir_output weir_with_value(weir_output o, weir_bytes value) { o.value = value; return o; }
/** `o` at this event time (ms since the Unix epoch). */
static inline weir_output weir_at(weir_output o, int64_t timestamp) { o.timestamp = timestamp; return o; }

/** Where a function's outputs go. */
typedef struct weir_out weir_out;
/** Emits `o` (copying its bytes). A record that is then rejected emits
 * nothing: what it emitted before is dropped. */
void weir_emit(weir_out *out, weir_output o);

/* ------------------------------------------------------------ buffers */

/** A growable byte buffer, for values you build (aggregate and join
 * results, lower-cased text, JSON). */
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} weir_buf;

/** Appends bytes. */
void weir_buf_add(weir_buf *b, weir_bytes bytes);
/** Appends a NUL-terminated string. */
void weir_buf_str(weir_buf *b, const char *s);
/** Appends a formatted string (the formats of weir_reject). */
void weir_buf_fmt(weir_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void weir_buf_vfmt(weir_buf *b, const char *fmt, va_list ap);
/** Appends a Unicode scalar value as UTF-8. */
void weir_buf_utf8(weir_buf *b, uint32_t c);
/** The buffer's bytes (borrowed). */
static inline weir_bytes weir_buf_bytes(const weir_buf *b) { return (weir_bytes){b->ptr ? b->ptr : (const uint8_t *)"", b->len}; }
/** Empties the buffer, keeping its memory. */
static inline void weir_buf_clear(weir_buf *b) { b->len = 0; }
/** Frees the buffer's memory. */
void weir_buf_free(weir_buf *b);

/* ------------------------------------------------------------ text */

/** The next Unicode scalar value of UTF-8 text `s` at `*i`, advancing `*i`;
 * 0xFFFD for a byte that does not start a valid sequence. */
uint32_t weir_utf8_next(weir_bytes s, size_t *i);
/** Whether `c` is a letter or digit (as Rust's char::is_alphanumeric, for
 * the letters and digits the C library knows). */
bool weir_is_alnum(uint32_t c);
/** The lower-case form of `c` (simple case mapping). */
uint32_t weir_to_lower(uint32_t c);
/** Parses a decimal integer (optional sign, digits, nothing else). */
bool weir_parse_i64(weir_bytes s, int64_t *out);

/* ------------------------------------------------------------ JSON */

/** The kind of a JSON value. */
typedef enum {
    WEIR_JSON_NULL,
    WEIR_JSON_BOOL,
    WEIR_JSON_NUMBER,
    WEIR_JSON_STRING,
    WEIR_JSON_ARRAY,
    WEIR_JSON_OBJECT,
} weir_json_kind;

/** A JSON value inside a document: its kind and its text (a string's text
 * includes the quotes; weir_json_string decodes it). */
typedef struct {
    weir_json_kind kind;
    weir_bytes text;
} weir_json;

/** Parses `doc` as one JSON value (surrounding whitespace allowed); false if
 * it is not valid JSON. */
bool weir_json_parse(weir_bytes doc, weir_json *value);
/** The member `name` of an object into `*member`: 1 if found, 0 if the
 * object has no such member, -1 if `object` is not an object or has the
 * member twice. */
int weir_json_member(weir_json object, const char *name, weir_json *member);
/** Appends the decoded text of a JSON string to `out`; false if `v` is not a
 * string. */
bool weir_json_string(weir_json v, weir_buf *out);

/* ------------------------------------------------------------ settings and log */

/** The step's setting `name` (`[steps.config]`, `weir test --config k=v`), or
 * NULL. The last setting of a name wins. */
const char *weir_config(const char *name);
/** The number of settings, and the i-th one (in order). */
size_t weir_config_count(void);
void weir_config_entry(size_t i, const char **name, const char **value);

/** Log levels. */
typedef enum { WEIR_TRACE, WEIR_DEBUG, WEIR_INFO, WEIR_WARN, WEIR_ERROR } weir_level;
/** Writes a formatted message (the formats of weir_reject) to the host's log. */
void weir_log(weir_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------ state and timers (processors) */

/** Reads `key` of `store` into `*value` (none when absent; the bytes live
 * until the call returns). On an error (an undeclared store) the record is
 * rejected and WEIR_REJECTED returned. */
weir_status weir_state_get(const char *store, weir_bytes key, weir_bytes *value);
/** Sets `key` of `store` to `value`. */
weir_status weir_state_put(const char *store, weir_bytes key, weir_bytes value);
/** Removes `key` from `store`. */
weir_status weir_state_delete(const char *store, weir_bytes key);
/** A key and its value. */
typedef struct {
    weir_bytes key;
    weir_bytes value;
} weir_entry;
/** Up to `limit` entries with start <= key < end (none: no bound), in key
 * order, into `*entries` and `*count` (living until the call returns). */
weir_status weir_state_range(const char *store, weir_bytes start, weir_bytes end, uint32_t limit,
                             weir_entry **entries, size_t *count);

/** Fires `tag` when the partition's stream time reaches `time` (ms). A tag
 * is one timer per clock: setting it again moves it. */
void weir_timer_at_event_time(int64_t time, weir_bytes tag);
/** Fires `tag` when the wall clock reaches `time` (ms). */
void weir_timer_at_wall_clock(int64_t time, weir_bytes tag);
void weir_timer_cancel_event_time(weir_bytes tag);
void weir_timer_cancel_wall_clock(weir_bytes tag);

/* ------------------------------------------------------------ the four kinds of function */

/** A time window, [start, end) in ms since the Unix epoch. */
typedef struct {
    int64_t start;
    int64_t end;
} weir_window;

/** The two sides of a join that met; `left` or `right` is none when that
 * side did not match (left or outer joins). */
typedef struct {
    weir_bytes key;
    int64_t timestamp;
    weir_bytes left;
    weir_bytes right;
} weir_pair;

/** A computed value (aggregate `present`, join): what you append to `bytes`
 * is the value; set `none` for none (`present`: nothing is emitted; a join:
 * a result without a value, a tombstone in a table join). */
typedef struct {
    weir_buf bytes;
    bool none;
} weir_result;

typedef weir_status (*weir_map_fn)(const weir_record *r, weir_out *out);
typedef weir_status (*weir_timer_fn)(int64_t time, weir_bytes tag, weir_out *out);
typedef weir_status (*weir_join_fn)(const weir_pair *p, weir_result *value);

/** An aggregate's functions, over an accumulator of `size` bytes that the
 * host stores (the accumulator's bytes as they are in memory). */
typedef struct {
    size_t size;
    void (*init)(void *acc);
    weir_status (*add)(void *acc, const weir_record *r);
    void (*merge)(void *a, const void *b);
    /* NULL: the accumulator's bytes. `window` is NULL for an unwindowed aggregate. */
    weir_status (*present)(const void *acc, weir_bytes key, const weir_window *window, weir_result *value);
} weir_aggregate_def;

/** A stored state entry that an upgrade converts to the module's format:
 * `store` ("" for an aggregator's accumulator), `key` (the record key an
 * accumulator groups, or the store key) and `value` (the stored bytes, in the
 * older format). */
typedef struct {
    weir_bytes store;
    weir_bytes key;
    weir_bytes value;
} weir_state_entry;

/** Converts an entry written in format `from`: append the new bytes (an
 * aggregator's accumulator as its bytes in memory) to `value->bytes`, or set
 * `value->none` to drop the entry; a rejection refuses the switch. */
typedef weir_status (*weir_upgrade_fn)(uint32_t from, const weir_state_entry *e, weir_result *value);

/* What the macros below expand to; not for direct use. */
uint32_t *weir__upgrade(uint32_t from, uint8_t *batch, size_t n, weir_upgrade_fn f);
uint8_t *weir__init(const uint8_t *config, size_t n);
uint32_t *weir__map(uint8_t *batch, size_t n, weir_map_fn f);
uint32_t *weir__on_timer(int64_t time, uint8_t *tag, size_t n, weir_timer_fn f);
uint32_t *weir__join(uint8_t *batch, size_t n, weir_join_fn f);
uint32_t *weir__agg_add(uint8_t *batch, size_t n, const weir_aggregate_def *a);
uint8_t *weir__agg_merge(uint8_t *a, size_t an, uint8_t *b, size_t bn, const weir_aggregate_def *def);
uint32_t *weir__agg_present(uint8_t *batch, size_t n, const weir_aggregate_def *a);

#define WEIR__EXPORT(iface, name) __attribute__((export_name("weir:functions/" iface "@0.1.0#" name)))

/** A mapper (map, filter, flat-map, routing): `weir_status f(const
 * weir_record *r, weir_out *out)` emits zero or more outputs and returns
 * WEIR_OK, or returns weir_reject(...). Place it after the function. */
#define WEIR_MAP(f)                                                                                \
    WEIR__EXPORT("mapping", "init") uint8_t *weir__mapping_init(uint8_t *p, size_t n) {            \
        return weir__init(p, n);                                                                   \
    }                                                                                              \
    WEIR__EXPORT("mapping", "process") uint32_t *weir__mapping_process(uint8_t *p, size_t n) {     \
        return weir__map(p, n, (f));                                                               \
    }

/** A processor (state and timers): `process` as a map function; `on_timer`
 * (or NULL): `weir_status on_timer(int64_t time, weir_bytes tag, weir_out *out)`. */
#define WEIR_PROCESSOR(process, on_timer)                                                          \
    WEIR__EXPORT("processing", "init") uint8_t *weir__processing_init(uint8_t *p, size_t n) {      \
        return weir__init(p, n);                                                                   \
    }                                                                                              \
    WEIR__EXPORT("processing", "process")                                                          \
    uint32_t *weir__processing_process(uint8_t *p, size_t n) { return weir__map(p, n, (process)); } \
    WEIR__EXPORT("processing", "on-timer")                                                         \
    uint32_t *weir__processing_on_timer(int64_t t, uint8_t *p, size_t n) {                         \
        return weir__on_timer(t, p, n, (on_timer));                                                \
    }

/** A joiner: `weir_status f(const weir_pair *p, weir_result *value)`. */
#define WEIR_JOIN(f)                                                                               \
    WEIR__EXPORT("joining", "init") uint8_t *weir__joining_init(uint8_t *p, size_t n) {            \
        return weir__init(p, n);                                                                   \
    }                                                                                              \
    WEIR__EXPORT("joining", "join") uint32_t *weir__joining_join(uint8_t *p, size_t n) {           \
        return weir__join(p, n, (f));                                                              \
    }

/** An aggregator over an accumulator of type `Acc`: `void init(Acc *)`,
 * `weir_status add(Acc *, const weir_record *)` (a rejection must leave the
 * accumulator as it was), `void merge(Acc *a, const Acc *b)` (into a), and
 * `weir_status present(const Acc *, weir_bytes key, const weir_window *,
 * weir_result *)` or NULL. */
#define WEIR_AGGREGATE(Acc, init, add, merge, present)                                             \
    static const weir_aggregate_def weir__aggregate = {                                           \
        sizeof(Acc),                                                                               \
        (void (*)(void *))(init),                                                                  \
        (weir_status(*)(void *, const weir_record *))(add),                                        \
        (void (*)(void *, const void *))(merge),                                                   \
        (weir_status(*)(const void *, weir_bytes, const weir_window *, weir_result *))(present),   \
    };                                                                                             \
    WEIR__EXPORT("aggregation", "init") uint8_t *weir__aggregation_init(uint8_t *p, size_t n) {    \
        return weir__init(p, n);                                                                   \
    }                                                                                              \
    WEIR__EXPORT("aggregation", "add") uint32_t *weir__aggregation_add(uint8_t *p, size_t n) {     \
        return weir__agg_add(p, n, &weir__aggregate);                                              \
    }                                                                                              \
    WEIR__EXPORT("aggregation", "merge")                                                           \
    uint8_t *weir__aggregation_merge(uint8_t *a, size_t an, uint8_t *b, size_t bn) {               \
        return weir__agg_merge(a, an, b, bn, &weir__aggregate);                                    \
    }                                                                                              \
    WEIR__EXPORT("aggregation", "present")                                                         \
    uint32_t *weir__aggregation_present(uint8_t *p, size_t n) {                                    \
        return weir__agg_present(p, n, &weir__aggregate);                                          \
    }

/** A state upgrade, beside WEIR_AGGREGATE or WEIR_PROCESSOR: the module
 * writes state format `format` (a module without WEIR_UPGRADE writes 0), and
 * `weir_status upgrade(uint32_t from, const weir_state_entry *e, weir_result
 * *value)` converts what a version of another format stored. */
#define WEIR_UPGRADE(format, upgrade)                                                              \
    WEIR__EXPORT("upgrading", "state-format") uint32_t weir__upgrading_state_format(void) {       \
        return (format);                                                                           \
    }                                                                                              \
    WEIR__EXPORT("upgrading", "upgrade")                                                           \
    uint32_t *weir__upgrading_upgrade(uint32_t from, uint8_t *p, size_t n) {                       \
        return weir__upgrade(from, p, n, (upgrade));                                               \
    }

#ifdef __cplusplus
}
#endif

#endif /* WEIR_H */
