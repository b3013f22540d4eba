/* weir-guest for C: what the exports of the component do. The macros of
 * weir.h define the exports themselves, in the function's own file, since
 * only they know its functions; each calls one of these with the function:
 * it decodes the batch, calls the function once per record (or pair, group,
 * entry) and encodes the result list. */
#include "weir-internal.h"

/* ------------------------------------------------------------ the exports */

uint32_t *weir__map(uint8_t *batch, size_t n, weir_map_fn f) {
    weir__begin_call();
    weir__own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    weir__out_start(&out, n + 64);
    for (uint32_t i = 0; i < count; i++) {
        weir_record rec;
        size_t h;
        weir__headers_len = 0;
        weir__rd_record(&r, &rec, &h);
        rec.headers = weir__headers + h;
        out.index = i;
        out.timestamp = rec.timestamp;
        weir__current_offset = rec.offset;
        size_t mark_len = out.b.len;
        uint32_t mark_count = out.count;
        if (f(&rec, &out) != WEIR_OK) {
            // Drop what this record emitted before it was rejected.
            out.b.len = mark_len;
            out.count = mark_count;
            weir__rejected(&out, i);
        }
    }
    weir__current_offset = -1;
    return weir__finish(&out);
}

uint32_t *weir__on_timer(int64_t time, uint8_t *tag, size_t n, weir_timer_fn f) {
    weir__begin_call();
    weir__own(tag);
    weir_out out;
    weir__out_start(&out, 64);
    out.timestamp = time;
    if (f != NULL && f(time, weir_bytes_of(tag, n), &out) != WEIR_OK) {
        weir_buf_free(&out.b);
        weir__out_start(&out, 64);
        weir__rejected(&out, 0);
    }
    return weir__finish(&out);
}

static void result_value(weir_out *out, uint32_t index, weir_status st, weir_result *v) {
    if (st != WEIR_OK) {
        weir__rejected(out, index);
    } else {
        entry(out, 3, index);
        wr_opt_bytes(&out->b, v->none ? WEIR_NONE : weir_buf_bytes(&v->bytes));
    }
    weir_buf_clear(&v->bytes);
    v->none = false;
}

uint32_t *weir__join(uint8_t *batch, size_t n, weir_join_fn f) {
    weir__begin_call();
    weir__own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    weir__out_start(&out, n + 64);
    weir_result v = {0};
    for (uint32_t i = 0; i < count; i++) {
        weir_pair p;
        p.key = rd_opt_bytes(&r);
        p.timestamp = rd_i64(&r);
        p.left = rd_opt_bytes(&r);
        p.right = rd_opt_bytes(&r);
        result_value(&out, i, f(&p, &v), &v);
    }
    weir_buf_free(&v.bytes);
    return weir__finish(&out);
}

uint32_t *weir__upgrade(uint32_t from, uint8_t *batch, size_t n, weir_upgrade_fn f) {
    weir__begin_call();
    weir__own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    weir__out_start(&out, n + 64);
    weir_result v = {0};
    for (uint32_t i = 0; i < count; i++) {
        weir_state_entry e;
        e.store = rd_bytes(&r);
        e.key = rd_opt_bytes(&r);
        e.value = rd_bytes(&r);
        result_value(&out, i, f(from, &e, &v), &v);
    }
    weir_buf_free(&v.bytes);
    return weir__finish(&out);
}

static void *decode_acc(const weir_aggregate_def *a, weir_bytes stored, void *acc) {
    if (stored.ptr == NULL) {
        memset(acc, 0, a->size);
        a->init(acc);
    } else if (stored.len != a->size) {
        weir__fatal("a stored accumulator has the wrong size (did the accumulator's type change?)");
    } else {
        memcpy(acc, stored.ptr, a->size);
    }
    return acc;
}

uint32_t *weir__agg_add(uint8_t *batch, size_t n, const weir_aggregate_def *a) {
    weir__begin_call();
    weir__own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_record *records = weir__xmalloc(count * sizeof(weir_record));
    weir__own(records);
    size_t *first_header = weir__xmalloc(count * sizeof(size_t));
    weir__own(first_header);
    weir__headers_len = 0;
    for (uint32_t i = 0; i < count; i++) weir__rd_record(&r, &records[i], &first_header[i]);
    for (uint32_t i = 0; i < count; i++) records[i].headers = weir__headers + first_header[i];
    uint32_t groups = rd_u32(&r);
    weir_bytes *stored = weir__xmalloc(groups * sizeof(weir_bytes));
    weir__own(stored);
    const uint8_t **members = weir__xmalloc(groups * sizeof(uint8_t *));
    weir__own(members);
    uint32_t *member_count = weir__xmalloc(groups * sizeof(uint32_t));
    weir__own(member_count);
    for (uint32_t g = 0; g < groups; g++) {
        stored[g] = rd_opt_bytes(&r);
        member_count[g] = rd_u32(&r);
        need(&r, (size_t)member_count[g] * 4);
        members[g] = r.p;
        r.p += (size_t)member_count[g] * 4;
    }
    // A record rejected in one group is left out of every group: rerun until
    // no new rejection appears (one pass when none is rejected).
    weir_buf *messages = weir__xmalloc((count ? count : 1) * sizeof(weir_buf));
    weir__own(messages);
    bool *is_rejected = weir__xmalloc(count ? count : 1);
    weir__own(is_rejected);
    memset(is_rejected, 0, count);
    memset(messages, 0, (count ? count : 1) * sizeof(weir_buf));
    uint8_t *accs = weir__xmalloc(groups * a->size);
    weir__own(accs);
    size_t rejections = 0;
    for (;;) {
        size_t before = rejections;
        for (uint32_t g = 0; g < groups; g++) {
            void *acc = decode_acc(a, stored[g], accs + g * a->size);
            for (uint32_t m = 0; m < member_count[g]; m++) {
                uint32_t k;
                memcpy(&k, members[g] + 4 * m, 4);
                if (k >= count) weir__fatal("the host sent a group member out of range");
                if (is_rejected[k]) continue;
                if (a->add(acc, &records[k]) != WEIR_OK) {
                    is_rejected[k] = true;
                    rejections++;
                    weir_buf_add(&messages[k], weir_buf_bytes(&weir__reject_message));
                    weir_buf_clear(&weir__reject_message);
                }
            }
        }
        if (rejections == before) break;
    }
    weir_out out;
    weir__out_start(&out, 64 + groups * (a->size + 16));
    for (uint32_t k = 0; k < count; k++) {
        if (!is_rejected[k]) continue;
        entry(&out, 1, k);
        wr_bytes(&out.b, weir_buf_bytes(&messages[k]));
        weir_buf_free(&messages[k]);
    }
    for (uint32_t g = 0; g < groups; g++) {
        entry(&out, 2, g);
        wr_bytes(&out.b, weir_bytes_of(accs + g * a->size, a->size));
    }
    return weir__finish(&out);
}

uint8_t *weir__agg_merge(uint8_t *x, size_t xn, uint8_t *y, size_t yn, const weir_aggregate_def *a) {
    weir__begin_call();
    weir__own(x);
    weir__own(y);
    uint8_t *acc = weir__xmalloc(a->size);
    uint8_t *other = weir__xmalloc(a->size);
    weir__own(other);
    decode_acc(a, weir_bytes_of(x, xn), acc);
    decode_acc(a, weir_bytes_of(y, yn), other);
    a->merge(acc, other);
    weir__free_owned();
    weir__last_result = acc;
    static uint32_t merged[3];
    merged[0] = 0;
    merged[1] = (uint32_t)(uintptr_t)acc;
    merged[2] = (uint32_t)a->size;
    return (uint8_t *)merged;
}

uint32_t *weir__agg_present(uint8_t *batch, size_t n, const weir_aggregate_def *a) {
    weir__begin_call();
    weir__own(batch);
    reader r = {batch, batch + n};
    uint32_t count = rd_u32(&r);
    weir_out out;
    weir__out_start(&out, 64 * (count + 1));
    weir_result v = {0};
    void *acc = weir__xmalloc(a->size);
    weir__own(acc);
    for (uint32_t i = 0; i < count; i++) {
        weir_bytes key = rd_opt_bytes(&r);
        weir_window w;
        w.start = rd_i64(&r);
        w.end = rd_i64(&r);
        decode_acc(a, rd_bytes(&r), acc);
        weir_status st = WEIR_OK;
        if (a->present != NULL) {
            st = a->present(acc, key, (w.start != 0 || w.end != 0) ? &w : NULL, &v);
        } else {
            weir_buf_add(&v.bytes, weir_bytes_of(acc, a->size));
        }
        result_value(&out, i, st, &v);
    }
    weir_buf_free(&v.bytes);
    return weir__finish(&out);
}
