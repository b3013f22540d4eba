/* weir-guest for C: the component's memory, the log, the step's settings,
 * init and abort(). The rest of the SDK is in the files beside it, one
 * concern each:
 *
 *   weir-buf.c      bytes, growable buffers and their printf-like formatting
 *   weir-codec.c    the packed batch encoding of wit/functions.wit: reading
 *                   records, writing the result list, outputs and rejections
 *   weir-text.c     UTF-8 text, integers and JSON
 *   weir-state.c    state stores and timers (the state and timers imports)
 *   weir-exports.c  the canonical-ABI exports the macros of weir.h call
 *
 * weir-internal.h declares what they share. Uses only malloc and <string.h>
 * from the C library (wasi-libc), so a guest built with it imports no WASI. */
#include "weir-internal.h"

/* ------------------------------------------------------------ imports */

__attribute__((import_module("weir:functions/log@0.1.0"), import_name("write"))) extern void
weir__log_write(int32_t level, const char *ptr, size_t len);

/* stderr, for weir_abort() only: a component whose code never calls
 * abort() keeps no WASI import (the linker drops what nothing calls). */
__attribute__((import_module("wasi_snapshot_preview1"), import_name("fd_write"))) extern int32_t
weir__fd_write(int32_t fd, const void *iovs, size_t count, size_t *written);

/* The offset of the record being processed, for abort()'s message. */
int64_t weir__current_offset = -1;

/* ------------------------------------------------------------ memory */

__attribute__((export_name("cabi_realloc"))) void *cabi_realloc(void *old, size_t old_size, size_t align,
                                                                  size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(old, new_size);
    if (p == NULL) __builtin_trap();
    return p;
}

void *weir__xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (p == NULL) __builtin_trap();
    return p;
}

/* Memory freed when the current call returns: the input batch, what the
 * state imports returned, messages. */
static void **owned;
static size_t owned_len, owned_cap;

void weir__own(void *p) {
    if (p == NULL) return;
    if (owned_len == owned_cap) {
        owned_cap = owned_cap ? owned_cap * 2 : 16;
        owned = realloc(owned, owned_cap * sizeof(void *));
        if (owned == NULL) __builtin_trap();
    }
    owned[owned_len++] = p;
}

void weir__free_owned(void) {
    for (size_t i = 0; i < owned_len; i++) free(owned[i]);
    owned_len = 0;
}

/* The result of the previous call, freed at the next one (the host has
 * copied it out by then). */
void *weir__last_result;

void weir__begin_call(void) {
    free(weir__last_result);
    weir__last_result = NULL;
}

/* ------------------------------------------------------------ log and config */

void weir_log(weir_level level, const char *fmt, ...) {
    weir_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    weir_buf_vfmt(&b, fmt, ap);
    va_end(ap);
    weir__log_write((int32_t)level, (const char *)weir_buf_bytes(&b).ptr, b.len);
    weir_buf_free(&b);
}

__attribute__((noreturn)) void weir__fatal(const char *what) {
    weir_log(WEIR_ERROR, "weir-guest: %s", what);
    __builtin_trap();
}

static char **config_entries; /* name, value, name, value, ... */
static size_t config_len;
static bool config_set;

const char *weir_config(const char *name) {
    for (size_t i = config_len; i > 0; i--) {
        if (strcmp(config_entries[2 * (i - 1)], name) == 0) return config_entries[2 * (i - 1) + 1];
    }
    return NULL;
}

size_t weir_config_count(void) { return config_len; }

void weir_config_entry(size_t i, const char **name, const char **value) {
    if (i >= config_len) {
        *name = *value = NULL;
        return;
    }
    *name = config_entries[2 * i];
    *value = config_entries[2 * i + 1];
}

static char *cstring(uint32_t ptr, uint32_t len) {
    char *s = weir__xmalloc((size_t)len + 1);
    memcpy(s, (const void *)(uintptr_t)ptr, len);
    s[len] = 0;
    return s;
}

uint8_t *weir__init(const uint8_t *list, size_t n) {
    const uint32_t *e = (const uint32_t *)list;
    // A second init on the same instance keeps the first settings.
    if (!config_set) {
        config_set = true;
        config_entries = weir__xmalloc(2 * n * sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            config_entries[2 * i] = cstring(e[4 * i], e[4 * i + 1]);
            config_entries[2 * i + 1] = cstring(e[4 * i + 2], e[4 * i + 3]);
        }
        config_len = n;
    }
    for (size_t i = 0; i < n; i++) {
        free((void *)(uintptr_t)e[4 * i]);
        free((void *)(uintptr_t)e[4 * i + 2]);
    }
    free((void *)list);
    static uint32_t ok[3];
    ok[0] = 0;
    return (uint8_t *)ok;
}

/* abort() in code that includes weir.h: it traps, as the C library's does,
 * after saying on stderr which record was being processed (the host puts
 * what the guest wrote on stderr into the dead letter's reason). */
void weir_abort(void) {
    weir_buf m = {0};
    if (weir__current_offset >= 0) {
        weir_buf_fmt(&m, "weir-guest: abort() called while processing the record at offset %lld\n",
                     (long long)weir__current_offset);
    } else {
        weir_buf_str(&m, "weir-guest: abort() called\n");
    }
    struct {
        const void *ptr;
        size_t len;
    } iov = {m.ptr, m.len};
    size_t written;
    weir__fd_write(2, &iov, 1, &written);
    __builtin_trap();
}
