/* Host functions of a component, called by wasmtime without a trip through ctypes.
 *
 * A guest's hello request makes 34-48 host calls. Through wasmtime-py each one is a ctypes
 * callback that wraps every argument in Python objects (ResourceAny, ResourceHost, Variant,
 * Record), converts them again into the host's canonical values and back on return: about 30 us
 * of Python per call, more than the host functions themselves. Here wasmtime calls C, which reads
 * the component values straight into canonical Python values (resources as the host objects their
 * handles stand for), calls the host function once, and writes its canonical result back.
 *
 * The wasmtime 49 C API is declared below by hand: the wasmtime wheel ships the library but no
 * headers. wasm_runtime/_crossing.py checks this file's view of the value layout against
 * wasmtime-py's ctypes declarations (generated from the real headers) before using it, and hands
 * over the library's function addresses, so nothing here links against libwasmtime directly.
 *
 * Canonical values (wasm_runtime/_canon.py): result -> Ok/Err, option -> None or the value,
 * variant -> Variant(tag, payload), record -> dict, enum -> str, flags -> set[str],
 * tuple -> tuple, list<u8> -> bytes, other lists -> list, own/borrow -> the host object.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- wasmtime 49 component values (wasmtime/component/val.h) ---------------------------- */

typedef struct {
    size_t size;
    char *data;
} name_t; /* wasm_name_t / wasm_byte_vec_t */

typedef struct val val_t;
typedef struct record_entry record_entry_t;

typedef struct {
    size_t size;
    val_t *data;
} vallist_t; /* also wasmtime_component_valtuple_t */

typedef struct {
    size_t size;
    record_entry_t *data;
} valrecord_t;

typedef struct {
    size_t size;
    name_t *data;
} valflags_t;

typedef struct {
    name_t discriminant;
    val_t *val;
} valvariant_t;

typedef struct {
    bool is_ok;
    val_t *val;
} valresult_t;

struct val {
    uint8_t kind;
    union {
        bool boolean;
        int8_t s8;
        uint8_t u8;
        int16_t s16;
        uint16_t u16;
        int32_t s32;
        uint32_t u32;
        int64_t s64;
        uint64_t u64;
        float f32;
        double f64;
        uint32_t character;
        name_t string;
        vallist_t list;
        valrecord_t record;
        vallist_t tuple;
        valvariant_t variant;
        name_t enumeration;
        val_t *option;
        valresult_t result;
        valflags_t flags;
        void *resource;
    } of;
};

struct record_entry {
    name_t name;
    val_t val;
};

enum {
    K_BOOL = 0, K_S8, K_U8, K_S16, K_U16, K_S32, K_U32, K_S64, K_U64, K_F32, K_F64, K_CHAR,
    K_STRING = 12, K_LIST = 13, K_RECORD = 14, K_TUPLE = 15, K_VARIANT = 16, K_ENUM = 17,
    K_OPTION = 18, K_RESULT = 19, K_FLAGS = 20, K_RESOURCE = 21,
    /* Plan-only kinds: what a value of kind K_RESOURCE, K_LIST or K_STRING means to the host. */
    P_OWN = 100, P_BORROW = 101, P_BYTES = 102,
    P_LATIN1 = 103, /* a string of code points below 256, which the host takes and gives as bytes */
};

typedef void wt_error_t;   /* wasmtime_error_t */
typedef void wt_context_t; /* wasmtime_context_t */

typedef wt_error_t *(*func_callback_t)(void *env, wt_context_t *ctx, const void *ty, val_t *args,
                                    size_t nargs, val_t *results, size_t nresults);
typedef wt_error_t *(*resource_dtor_t)(void *env, wt_context_t *ctx, uint32_t rep);

/* The library's functions, filled by init() from wasmtime-py's ctypes handles. */
static struct {
    wt_error_t *(*error_new)(const char *message);
    void (*byte_vec_new)(name_t *out, size_t size, const char *data);
    void (*byte_vec_new_uninit)(name_t *out, size_t size);
    void (*vallist_new_uninit)(vallist_t *out, size_t size);
    void (*vallist_delete)(vallist_t *list);
    void (*valtuple_new_uninit)(vallist_t *out, size_t size);
    void (*valtuple_delete)(vallist_t *tuple);
    void (*valrecord_new_uninit)(valrecord_t *out, size_t size);
    void (*valrecord_delete)(valrecord_t *record);
    void (*valflags_new_uninit)(valflags_t *out, size_t size);
    val_t *(*val_new)(val_t *val);
    void (*val_free)(val_t *val);
    wt_error_t *(*resource_any_to_host)(wt_context_t *ctx, const void *any, void **host_out);
    uint32_t (*resource_host_rep)(const void *host);
    void *(*resource_host_new)(bool owned, uint32_t rep, uint32_t ty);
    void (*resource_host_delete)(void *host);
    wt_error_t *(*resource_host_to_any)(wt_context_t *ctx, const void *host, void **any_out);
    void (*error_message)(const wt_error_t *error, name_t *message);
    void (*error_delete)(wt_error_t *error);
    void (*byte_vec_delete)(name_t *vec);
    wt_error_t *(*add_func)(void *linker_instance, const char *name, size_t name_len,
                         func_callback_t callback, void *data, void (*finalizer)(void *));
    wt_error_t *(*add_resource)(void *linker_instance, const char *name, size_t name_len,
                             const void *resource_type, resource_dtor_t dtor, void *data,
                             void (*finalizer)(void *));
    void *(*context_get_data)(const wt_context_t *ctx);
    void (*context_set_data)(wt_context_t *ctx, void *data);
    wt_error_t *(*func_call)(const void *func, wt_context_t *ctx, const val_t *args, size_t nargs, val_t *results,
                          size_t nresults);
    wt_error_t *(*func_post_return)(const void *func, wt_context_t *ctx);
    void (*val_delete)(val_t *val);
    void (*context_set_epoch_deadline)(wt_context_t *ctx, uint64_t ticks_beyond_current);
} W;

static bool ready = false;

/* Set by init(): the canonical classes, and the `on_drop` every host resource inherits (a
 * resource whose class keeps it needs nothing done when the guest drops it). */
static PyObject *Ok_type, *Err_type, *Variant_type, *base_on_drop;
static PyObject *str_value, *str_tag, *str_payload, *str_resource_id, *str_on_drop;

/* ---- ResourceTable: the host objects a Store's resource handles stand for --------------------
 *
 * One per Store, bound to it as the store's data (bind_table), so a host call finds the table of
 * the store that called it without asking Python which invocation runs on this thread. */

typedef struct {
    PyObject_HEAD
    PyObject *items; /* dict: rep (int) -> host object */
    uint32_t next;
} Table;

static PyTypeObject TableType;

static PyObject *Table_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (!_PyArg_NoPositional("ResourceTable", args) || !_PyArg_NoKeywords("ResourceTable", kwds))
        return NULL;
    Table *self = (Table *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->next = 1;
    if ((self->items = PyDict_New()) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Host objects may lead back to the store that holds the table: the collector must see through it. */
static int Table_traverse(Table *self, visitproc visit, void *arg) {
    Py_VISIT(self->items);
    return 0;
}

static int Table_clear(Table *self) {
    Py_CLEAR(self->items);
    return 0;
}

static void Table_dealloc(Table *self) {
    PyObject_GC_UnTrack(self);
    Table_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The table's dict, or NULL with an exception once the collector has cleared it. */
static PyObject *table_items(Table *t) {
    if (t->items == NULL)
        PyErr_SetString(PyExc_RuntimeError, "the resource table has been cleared");
    return t->items;
}

/* Host objects a store may hold for its guest at once. Unbounded, a guest keeping handles in a loop
 * had the host keep ~25 MB more a second until its own memory ran out (300,000 handles for a 128 MB
 * guest: the objects live in the host's heap, outside the guest's memory limit); wasmtime's
 * GHSA-852m-cvvp-9p4w, where `wasmtime serve` traps at its `max-component-handles`, 100,000. */
#define MAX_LIVE_RESOURCES 100000

static void wasmtime_error(PyObject *message);

/* The handle `obj` gets: -1 (with an exception) when the table is full or out of memory. */
static int64_t table_add(Table *t, PyObject *obj) {
    if (t->next == UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a store's resource handles are used up");
        return -1;
    }
    PyObject *items = table_items(t);
    if (items != NULL && PyDict_GET_SIZE(items) >= MAX_LIVE_RESOURCES) {
        wasmtime_error(PyUnicode_FromFormat(
            "the guest holds %d host resources at once, the most the sandbox keeps for one instance",
            MAX_LIVE_RESOURCES));
        return -1;
    }
    PyObject *key = items ? PyLong_FromUnsignedLong(t->next) : NULL;
    if (key == NULL || PyDict_SetItem(items, key, obj) < 0) {
        Py_XDECREF(key);
        return -1;
    }
    Py_DECREF(key);
    return t->next++;
}

/* Raises wasmtime.WasmtimeError(message), which becomes the guest's trap; steals `message`. */
static void wasmtime_error(PyObject *message) {
    if (message == NULL)
        return;
    PyObject *mod = PyImport_ImportModule("wasmtime");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "WasmtimeError") : NULL;
    Py_XDECREF(mod);
    if (cls == NULL) {
        Py_DECREF(message);
        return;
    }
    PyObject *exc = PyObject_CallOneArg(cls, message);
    Py_DECREF(message);
    if (exc != NULL) {
        PyErr_SetObject(cls, exc);
        Py_DECREF(exc);
    }
    Py_DECREF(cls);
}

static void unknown_handle(uint32_t rep) {
    wasmtime_error(PyUnicode_FromFormat("unknown resource handle %u", rep));
}

/* The object `rep` stands for (a new reference), taken out of the table when `take`; NULL with
 * an exception when `must` and there is none, NULL without one when not `must`. */
static PyObject *table_find(Table *t, uint32_t rep, bool take, bool must) {
    PyObject *items = table_items(t);
    PyObject *key = items ? PyLong_FromUnsignedLong(rep) : NULL;
    if (key == NULL)
        return NULL;
    PyObject *obj = PyDict_GetItemWithError(items, key); /* borrowed */
    Py_XINCREF(obj);
    if (obj != NULL && take && PyDict_DelItem(items, key) < 0)
        Py_CLEAR(obj);
    Py_DECREF(key);
    if (obj == NULL && must && !PyErr_Occurred())
        unknown_handle(rep);
    return obj;
}

static int take_u32(PyObject *value, uint32_t *out);

static PyObject *Table_add(Table *self, PyObject *obj) {
    int64_t rep = table_add(self, obj);
    return rep < 0 ? NULL : PyLong_FromLongLong(rep);
}

static PyObject *Table_get(Table *self, PyObject *arg) {
    uint32_t rep;
    Py_INCREF(arg);
    if (take_u32(arg, &rep) < 0)
        return NULL;
    return table_find(self, rep, false, true);
}

static PyObject *Table_pop(Table *self, PyObject *arg) {
    uint32_t rep;
    Py_INCREF(arg);
    if (take_u32(arg, &rep) < 0)
        return NULL;
    PyObject *obj = table_find(self, rep, true, false);
    if (obj == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return obj;
}

static Py_ssize_t Table_len(Table *self) {
    return self->items == NULL ? 0 : PyDict_GET_SIZE(self->items);
}

static PyMethodDef Table_methods[] = {
    {"add", (PyCFunction)Table_add, METH_O, "add(obj) -> rep: a new handle for obj."},
    {"get", (PyCFunction)Table_get, METH_O, "get(rep) -> obj; WasmtimeError if the handle is unknown."},
    {"pop", (PyCFunction)Table_pop, METH_O, "pop(rep) -> obj or None, taken out of the table."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Table_as_sequence = {.sq_length = (lenfunc)Table_len};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasm_runtime._hostcall.ResourceTable",
    .tp_basicsize = sizeof(Table),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ResourceTable(): the host objects a Store's resource handles (reps) stand for.",
    .tp_new = Table_new,
    .tp_traverse = (traverseproc)Table_traverse,
    .tp_clear = (inquiry)Table_clear,
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_methods = Table_methods,
    .tp_as_sequence = &Table_as_sequence,
};

/* The table bound to the calling store; NULL with an exception when there is none. */
static Table *store_table(wt_context_t *ctx) {
    Table *t = W.context_get_data(ctx);
    if (t == NULL)
        PyErr_SetString(PyExc_RuntimeError, "host call from a store without a resource table");
    return t;
}

/* ---- plans: a component value type as the crossing reads and writes it ------------------- */

typedef struct plan {
    int kind;
    Py_ssize_t n;            /* children, case, field or name count */
    struct plan **kids;      /* list/option: [0]; result: [0] ok, [1] err; tuple, record, variant */
    PyObject **names;        /* record fields, variant cases, enum and flags names (str) */
    const char **cnames;     /* the same, UTF-8 */
    Py_ssize_t *cname_lens;
} plan_t;

static void plan_free(plan_t *p) {
    if (p == NULL)
        return;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        if (p->kids)
            plan_free(p->kids[i]);
        if (p->names)
            Py_XDECREF(p->names[i]);
    }
    PyMem_Free(p->kids);
    PyMem_Free(p->names);
    PyMem_Free(p->cnames);
    PyMem_Free(p->cname_lens);
    PyMem_Free(p);
}

static plan_t *plan_new(PyObject *spec);

/* Names (and, when `with_kids`, child plans) from a tuple of str or of (str, plan-or-None). */
static int plan_fill(plan_t *p, PyObject *items, bool with_kids) {
    if (!PyTuple_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "plan: expected a tuple of names or (name, plan) pairs");
        return -1;
    }
    p->n = PyTuple_GET_SIZE(items);
    p->names = PyMem_Calloc(p->n ? p->n : 1, sizeof(PyObject *));
    p->cnames = PyMem_Calloc(p->n ? p->n : 1, sizeof(char *));
    p->cname_lens = PyMem_Calloc(p->n ? p->n : 1, sizeof(Py_ssize_t));
    if (with_kids)
        p->kids = PyMem_Calloc(p->n ? p->n : 1, sizeof(plan_t *));
    if (!p->names || !p->cnames || !p->cname_lens || (with_kids && !p->kids)) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->n; i++) {
        PyObject *item = PyTuple_GET_ITEM(items, i), *name = item, *kid = Py_None;
        if (with_kids) {
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
                PyErr_SetString(PyExc_TypeError, "plan: expected (name, plan) pairs");
                return -1;
            }
            name = PyTuple_GET_ITEM(item, 0);
            kid = PyTuple_GET_ITEM(item, 1);
        }
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "plan: names must be str");
            return -1;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        p->names[i] = name;
        p->cnames[i] = PyUnicode_AsUTF8AndSize(name, &p->cname_lens[i]);
        if (p->cnames[i] == NULL)
            return -1;
        if (with_kids && kid != Py_None && (p->kids[i] = plan_new(kid)) == NULL)
            return -1;
    }
    return 0;
}

/* spec: (kind,) | (kind, child) | (kind, ok, err) | (kind, (children...)) | (kind, (names...))
 * | (kind, ((name, child-or-None), ...)); see plan_of in _crossing.py. */
static plan_t *plan_new(PyObject *spec) {
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1) {
        PyErr_SetString(PyExc_TypeError, "plan: expected a tuple starting with a kind");
        return NULL;
    }
    plan_t *p = PyMem_Calloc(1, sizeof(plan_t));
    if (p == NULL)
        return (plan_t *)PyErr_NoMemory();
    p->kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    if (p->kind == -1 && PyErr_Occurred())
        goto fail;
    Py_ssize_t size = PyTuple_GET_SIZE(spec);
    PyObject *arg = size > 1 ? PyTuple_GET_ITEM(spec, 1) : NULL;
    switch (p->kind) {
    case K_BOOL: case K_S8: case K_U8: case K_S16: case K_U16: case K_S32: case K_U32:
    case K_S64: case K_U64: case K_F32: case K_F64: case K_CHAR: case K_STRING:
    case P_BYTES: case P_OWN: case P_BORROW: case P_LATIN1:
        return p;
    case K_LIST: case K_OPTION:
        if (arg == NULL)
            break;
        p->n = 1;
        p->kids = PyMem_Calloc(1, sizeof(plan_t *));
        if (p->kids == NULL || (p->kids[0] = plan_new(arg)) == NULL)
            goto fail;
        return p;
    case K_RESULT:
        if (size != 3)
            break;
        p->n = 2;
        p->kids = PyMem_Calloc(2, sizeof(plan_t *));
        if (p->kids == NULL)
            goto fail;
        for (int i = 0; i < 2; i++) {
            PyObject *kid = PyTuple_GET_ITEM(spec, 1 + i);
            if (kid != Py_None && (p->kids[i] = plan_new(kid)) == NULL)
                goto fail;
        }
        return p;
    case K_TUPLE:
        if (arg == NULL || !PyTuple_Check(arg))
            break;
        p->n = PyTuple_GET_SIZE(arg);
        p->kids = PyMem_Calloc(p->n ? p->n : 1, sizeof(plan_t *));
        if (p->kids == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < p->n; i++)
            if ((p->kids[i] = plan_new(PyTuple_GET_ITEM(arg, i))) == NULL)
                goto fail;
        return p;
    case K_RECORD: case K_VARIANT:
        if (arg == NULL || plan_fill(p, arg, true) < 0)
            goto fail;
        return p;
    case K_ENUM: case K_FLAGS:
        if (arg == NULL || plan_fill(p, arg, false) < 0)
            goto fail;
        return p;
    default:
        PyErr_Format(PyExc_ValueError, "plan: unknown kind %d", p->kind);
        goto fail;
    }
    PyErr_Format(PyExc_TypeError, "plan: malformed spec for kind %d", p->kind);
fail:
    plan_free(p);
    return NULL;
}

/* ---- errors ------------------------------------------------------------------------------ */

/* A wasmtime error becomes a Python RuntimeError carrying its message; the error is freed. */
static void raise_wasmtime_error(wt_error_t *err, const char *what) {
    name_t msg = {0, NULL};
    W.error_message(err, &msg);
    PyErr_Format(PyExc_RuntimeError, "%s: %.*s", what, (int)msg.size, msg.data ? msg.data : "");
    W.byte_vec_delete(&msg);
    W.error_delete(err);
}

/* ---- lifting: component value -> canonical Python value ---------------------------------- */

static Py_ssize_t find_name(const plan_t *p, const name_t *name) {
    for (Py_ssize_t i = 0; i < p->n; i++)
        if ((size_t)p->cname_lens[i] == name->size && memcmp(p->cnames[i], name->data, name->size) == 0)
            return i;
    return -1;
}

static PyObject *lift(const plan_t *p, const val_t *v, wt_context_t *ctx);

static PyObject *lift_resource(const plan_t *p, const val_t *v, wt_context_t *ctx) {
    if (v->of.resource == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "resource argument holds a null handle");
        return NULL;
    }
    void *host = NULL;
    wt_error_t *err = W.resource_any_to_host(ctx, v->of.resource, &host);
    if (err != NULL) {
        raise_wasmtime_error(err, "resource is not the host's");
        return NULL;
    }
    uint32_t rep = W.resource_host_rep(host);
    W.resource_host_delete(host);
    Table *t = store_table(ctx);
    return t == NULL ? NULL : table_find(t, rep, p->kind == P_OWN, true);
}

/* Body bytes cross as latin-1 text, which wasmtime hands over as UTF-8: one byte for each byte below
 * 128, two (C2 or C3, then a continuation byte) for each above. Text is mostly the former and binary
 * half of each, in runs, so both directions go a word at a time through a run of either kind (on
 * little-endian machines for the two-byte kind) and byte by byte where the kinds meet. In a 20 MiB
 * stream of bytes 0-255 in turn, byte by byte, this was 17 % of the process's CPU (perf). */
#define HIGH_BITS 0x8080808080808080ULL
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WORDS_LITTLE_ENDIAN 1
#else
#define WORDS_LITTLE_ENDIAN 0
#endif

/* High bytes in a word: its bytes above 127. */
static inline size_t high_bytes(uint64_t w) {
#if defined(__GNUC__)
    return (size_t)__builtin_popcountll(w & HIGH_BITS);
#else
    size_t n = 0;
    for (w &= HIGH_BITS; w; w &= w - 1)
        n++;
    return n;
#endif
}

static inline uint64_t load_word(const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* Copies the whole words of ASCII at src + *i to dst, advancing *i past them; how many bytes. */
static inline size_t copy_ascii_words(const unsigned char *src, size_t size, size_t *i, unsigned char *dst) {
    const size_t start = *i; /* not *i in the loop: a store through dst may alias it */
    size_t at = start;
    while (at + 8 <= size) {
        uint64_t w = load_word(src + at);
        if (w & HIGH_BITS)
            break;
        memcpy(dst + (at - start), &w, sizeof w);
        at += 8;
    }
    *i = at;
    return at - start;
}

/* The bytes of a UTF-8 string's code points, each below 256 (the body adapter's latin-1 text):
 * one pass, where decoding to str and encoding to latin-1 take two and a str in between. */
static PyObject *latin1_from_utf8(const name_t *s) {
    const unsigned char *src = (const unsigned char *)s->data;
    const size_t size = s->size;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out == NULL)
        return NULL;
    unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(out);
    size_t i = 0, n = 0;
    while (i < size) {
        n += copy_ascii_words(src, size, &i, dst + n);
#if WORDS_LITTLE_ENDIAN
        /* four two-byte sequences a word: C2 or C3, then a continuation byte (10xxxxxx) */
        while (i + 8 <= size) {
            uint64_t w = load_word(src + i);
            if ((w & 0xC0FEC0FEC0FEC0FEULL) != 0x80C280C280C280C2ULL)
                break;
            /* each 16-bit lane: 0x80 | (lead & 1) << 6 | (continuation & 0x3F), then the lanes' low
             * bytes packed together */
            uint64_t v = 0x0080008000800080ULL | (w & 0x0001000100010001ULL) << 6
                         | (w >> 8 & 0x003F003F003F003FULL);
            v = (v | v >> 8) & 0x0000FFFF0000FFFFULL;
            uint32_t four = (uint32_t)(v | v >> 16);
            memcpy(dst + n, &four, sizeof four);
            i += 8;
            n += 4;
        }
#endif
        if (i >= size)
            break;
        unsigned char c = src[i];
        if (c < 0x80) {
            dst[n++] = c;
            i++;
        } else if ((c == 0xC2 || c == 0xC3) && i + 1 < size && (src[i + 1] & 0xC0) == 0x80) {
            dst[n++] = (unsigned char)(((c & 0x1F) << 6) | (src[i + 1] & 0x3F));
            i += 2;
        } else {
            Py_DECREF(out);
            PyErr_Format(PyExc_ValueError, "string holds a code point above 255 at byte %zu", i);
            return NULL;
        }
    }
    if (n != size && _PyBytes_Resize(&out, (Py_ssize_t)n) < 0)
        return NULL;
    return out;
}

/* The kind of component value a plan reads and writes: its own, but for the plan-only kinds. */
static int value_kind(int plan_kind) {
    switch (plan_kind) {
    case P_OWN: case P_BORROW:
        return K_RESOURCE;
    case P_BYTES:
        return K_LIST;
    case P_LATIN1:
        return K_STRING;
    default:
        return plan_kind;
    }
}

static PyObject *lift(const plan_t *p, const val_t *v, wt_context_t *ctx) {
    if (v->kind != value_kind(p->kind)) {
        PyErr_Format(PyExc_TypeError, "component value of kind %d where kind %d was expected", v->kind,
                     value_kind(p->kind));
        return NULL;
    }
    switch (p->kind) {
    case K_BOOL:
        return PyBool_FromLong(v->of.boolean);
    case K_S8:
        return PyLong_FromLong(v->of.s8);
    case K_U8:
        return PyLong_FromLong(v->of.u8);
    case K_S16:
        return PyLong_FromLong(v->of.s16);
    case K_U16:
        return PyLong_FromLong(v->of.u16);
    case K_S32:
        return PyLong_FromLong(v->of.s32);
    case K_U32:
        return PyLong_FromUnsignedLong(v->of.u32);
    case K_S64:
        return PyLong_FromLongLong(v->of.s64);
    case K_U64:
        return PyLong_FromUnsignedLongLong(v->of.u64);
    case K_F32:
        return PyFloat_FromDouble(v->of.f32);
    case K_F64:
        return PyFloat_FromDouble(v->of.f64);
    case K_CHAR:
        return PyUnicode_FromOrdinal((int)v->of.character);
    case K_STRING:
        return PyUnicode_DecodeUTF8(v->of.string.data ? v->of.string.data : "", (Py_ssize_t)v->of.string.size,
                                    "strict");
    case P_LATIN1:
        return latin1_from_utf8(&v->of.string);
    case P_BYTES: {
        size_t n = v->of.list.size;
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (out == NULL)
            return NULL;
        char *dst = PyBytes_AS_STRING(out);
        const val_t *src = v->of.list.data;
        for (size_t i = 0; i < n; i++) {
            if (src[i].kind != K_U8) {
                Py_DECREF(out);
                PyErr_Format(PyExc_TypeError, "list<u8> holds a value of kind %d", src[i].kind);
                return NULL;
            }
            dst[i] = (char)src[i].of.u8;
        }
        return out;
    }
    case K_LIST: case K_TUPLE: {
        bool tuple = p->kind == K_TUPLE;
        const vallist_t *items = tuple ? &v->of.tuple : &v->of.list;
        if (tuple && (Py_ssize_t)items->size != p->n) {
            PyErr_Format(PyExc_TypeError, "tuple of %zu values where %zd were expected", items->size, p->n);
            return NULL;
        }
        PyObject *out = tuple ? PyTuple_New((Py_ssize_t)items->size) : PyList_New((Py_ssize_t)items->size);
        if (out == NULL)
            return NULL;
        for (size_t i = 0; i < items->size; i++) {
            PyObject *item = lift(p->kids[tuple ? i : 0], &items->data[i], ctx);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            if (tuple)
                PyTuple_SET_ITEM(out, (Py_ssize_t)i, item);
            else
                PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        }
        return out;
    }
    case K_RECORD: {
        const valrecord_t *rec = &v->of.record;
        if ((Py_ssize_t)rec->size != p->n) {
            PyErr_Format(PyExc_TypeError, "record of %zu fields where %zd were expected", rec->size, p->n);
            return NULL;
        }
        PyObject *out = PyDict_New();
        if (out == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < p->n; i++) {
            PyObject *item = lift(p->kids[i], &rec->data[i].val, ctx);
            if (item == NULL || PyDict_SetItem(out, p->names[i], item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
        }
        return out;
    }
    case K_VARIANT: {
        Py_ssize_t i = find_name(p, &v->of.variant.discriminant);
        if (i < 0) {
            PyErr_SetString(PyExc_TypeError, "variant case not in the function's type");
            return NULL;
        }
        PyObject *payload = Py_None;
        Py_INCREF(payload);
        if (p->kids[i] != NULL && v->of.variant.val != NULL) {
            Py_DECREF(payload);
            if ((payload = lift(p->kids[i], v->of.variant.val, ctx)) == NULL)
                return NULL;
        }
        PyObject *out = PyObject_CallFunctionObjArgs(Variant_type, p->names[i], payload, NULL);
        Py_DECREF(payload);
        return out;
    }
    case K_ENUM: {
        Py_ssize_t i = find_name(p, &v->of.enumeration);
        if (i < 0) {
            PyErr_SetString(PyExc_TypeError, "enum case not in the function's type");
            return NULL;
        }
        Py_INCREF(p->names[i]);
        return p->names[i];
    }
    case K_FLAGS: {
        PyObject *out = PySet_New(NULL);
        if (out == NULL)
            return NULL;
        for (size_t f = 0; f < v->of.flags.size; f++) {
            Py_ssize_t i = find_name(p, &v->of.flags.data[f]);
            if (i < 0 || PySet_Add(out, p->names[i]) < 0) {
                if (i < 0)
                    PyErr_SetString(PyExc_TypeError, "flag not in the function's type");
                Py_DECREF(out);
                return NULL;
            }
        }
        return out;
    }
    case K_OPTION:
        if (v->of.option == NULL)
            Py_RETURN_NONE;
        return lift(p->kids[0], v->of.option, ctx);
    case K_RESULT: {
        const plan_t *kid = p->kids[v->of.result.is_ok ? 0 : 1];
        PyObject *payload;
        if (kid != NULL && v->of.result.val != NULL) {
            if ((payload = lift(kid, v->of.result.val, ctx)) == NULL)
                return NULL;
        } else {
            payload = Py_None;
            Py_INCREF(payload);
        }
        PyObject *out = PyObject_CallOneArg(v->of.result.is_ok ? Ok_type : Err_type, payload);
        Py_DECREF(payload);
        return out;
    }
    case P_OWN: case P_BORROW:
        return lift_resource(p, v, ctx);
    }
    PyErr_Format(PyExc_SystemError, "plan kind %d cannot be lifted", p->kind);
    return NULL;
}

/* ---- lowering: canonical Python value -> component value ----------------------------------
 * `out` holds Bool(false) on entry and is left valid on failure, so wasmtime can always drop it. */

static int lower(const plan_t *p, PyObject *obj, val_t *out, wt_context_t *ctx);

static int type_error(const char *expected, PyObject *obj) {
    PyErr_Format(PyExc_TypeError, "expected %s, got %.200s", expected, Py_TYPE(obj)->tp_name);
    return -1;
}

static Py_ssize_t find_str(const plan_t *p, PyObject *name) {
    for (Py_ssize_t i = 0; i < p->n; i++)
        if (p->names[i] == name)
            return i;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        int eq = PyUnicode_Compare(p->names[i], name);
        if (eq == 0)
            return i;
        if (eq == -1 && PyErr_Occurred())
            return -2;
    }
    return -1;
}

/* A boxed value (option, result and variant payloads) lowered from `obj`, or NULL. */
static val_t *lower_boxed(const plan_t *p, PyObject *obj, wt_context_t *ctx) {
    val_t zero;
    memset(&zero, 0, sizeof zero);
    val_t *box = W.val_new(&zero);
    if (box == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (lower(p, obj, box, ctx) < 0) {
        W.val_free(box);
        return NULL;
    }
    return box;
}

static int lower_int(int kind, PyObject *obj, val_t *out) {
    if (!PyLong_Check(obj))
        return type_error("int", obj);
    /* Masked, as ctypes assigns out-of-range ints (the behaviour of the path this replaces). */
    unsigned long long bits = PyLong_AsUnsignedLongLongMask(obj);
    if (bits == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    switch (kind) {
    case K_S8: out->of.s8 = (int8_t)bits; break;
    case K_U8: out->of.u8 = (uint8_t)bits; break;
    case K_S16: out->of.s16 = (int16_t)bits; break;
    case K_U16: out->of.u16 = (uint16_t)bits; break;
    case K_S32: out->of.s32 = (int32_t)bits; break;
    case K_U32: out->of.u32 = (uint32_t)bits; break;
    case K_S64: out->of.s64 = (int64_t)bits; break;
    default: out->of.u64 = (uint64_t)bits; break;
    }
    out->kind = (uint8_t)kind;
    return 0;
}

static void lower_name(name_t *out, const char *data, Py_ssize_t size) {
    W.byte_vec_new(out, (size_t)size, data);
}

static int lower_seq(const plan_t *p, PyObject *obj, val_t *out, wt_context_t *ctx) {
    bool tuple = p->kind == K_TUPLE;
    PyObject *seq = PySequence_Fast(obj, tuple ? "expected a tuple" : "expected a list");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (tuple && n != p->n) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_TypeError, "tuple of %zd values where %zd were expected", n, p->n);
        return -1;
    }
    vallist_t items;
    (tuple ? W.valtuple_new_uninit : W.vallist_new_uninit)(&items, (size_t)n);
    if (n)
        memset(items.data, 0, (size_t)n * sizeof(val_t));
    for (Py_ssize_t i = 0; i < n; i++) {
        if (lower(p->kids[tuple ? i : 0], PySequence_Fast_GET_ITEM(seq, i), &items.data[i], ctx) < 0) {
            (tuple ? W.valtuple_delete : W.vallist_delete)(&items);
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    out->kind = (uint8_t)p->kind;
    if (tuple)
        out->of.tuple = items;
    else
        out->of.list = items;
    return 0;
}

/* `value` (a new reference, or NULL with an exception set) as a u32, released. */
static int take_u32(PyObject *value, uint32_t *out) {
    if (value == NULL)
        return -1;
    unsigned long n = PyLong_AsUnsignedLong(value);
    Py_DECREF(value);
    if (n == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (n > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "%lu does not fit a resource id or handle", n);
        return -1;
    }
    *out = (uint32_t)n;
    return 0;
}

static int lower_resource(const plan_t *p, PyObject *obj, val_t *out, wt_context_t *ctx) {
    uint32_t rid;
    Table *t = store_table(ctx);
    if (t == NULL || take_u32(PyObject_GetAttr(obj, str_resource_id), &rid) < 0)
        return -1;
    int64_t rep = table_add(t, obj);
    if (rep < 0)
        return -1;
    void *host = W.resource_host_new(p->kind == P_OWN, (uint32_t)rep, rid);
    void *any = NULL;
    wt_error_t *err = W.resource_host_to_any(ctx, host, &any);
    W.resource_host_delete(host);
    if (err != NULL) {
        raise_wasmtime_error(err, "host resource not accepted");
        return -1;
    }
    out->kind = K_RESOURCE;
    out->of.resource = any;
    return 0;
}

/* Bytes as the UTF-8 string of the same code points (the reverse of latin1_from_utf8). */
static int latin1_to_utf8(PyObject *obj, val_t *out) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return -1;
    const unsigned char *src = view.buf;
    const size_t size = (size_t)view.len;
    size_t high = 0, i = 0;
    for (; i + 8 <= size; i += 8)
        high += high_bytes(load_word(src + i));
    for (; i < size; i++)
        high += src[i] >> 7;
    name_t text;
    W.byte_vec_new_uninit(&text, size + high);
    unsigned char *dst = (unsigned char *)text.data;
    if (high == 0) {
        memcpy(dst, src, size);
    } else {
        i = 0;
        while (i < size) {
            dst += copy_ascii_words(src, size, &i, dst);
#if WORDS_LITTLE_ENDIAN
            /* four bytes above 127 a step, each spread to a 16-bit lane: C2 or C3 (0xC0 | its top
             * two bits), then a continuation byte (0x80 | its low six) */
            while (i + 4 <= size) {
                uint32_t four;
                memcpy(&four, src + i, sizeof four);
                if ((four & 0x80808080U) != 0x80808080U)
                    break;
                uint64_t x = four;
                x = (x | x << 16) & 0x0000FFFF0000FFFFULL;
                x = (x | x << 8) & 0x00FF00FF00FF00FFULL;
                uint64_t pairs = 0x80C080C080C080C0ULL | (x >> 6 & 0x0003000300030003ULL)
                                 | (x & 0x003F003F003F003FULL) << 8;
                memcpy(dst, &pairs, sizeof pairs);
                dst += 8;
                i += 4;
            }
#endif
            if (i >= size)
                break;
            unsigned char c = src[i++];
            if (c < 0x80) {
                *dst++ = c;
            } else {
                *dst++ = (unsigned char)(0xC0 | (c >> 6));
                *dst++ = (unsigned char)(0x80 | (c & 0x3F));
            }
        }
    }
    PyBuffer_Release(&view);
    out->kind = K_STRING;
    out->of.string = text;
    return 0;
}

static int lower(const plan_t *p, PyObject *obj, val_t *out, wt_context_t *ctx) {
    switch (p->kind) {
    case K_BOOL:
        if (!PyBool_Check(obj))
            return type_error("bool", obj);
        out->kind = K_BOOL;
        out->of.boolean = obj == Py_True;
        return 0;
    case K_S8: case K_U8: case K_S16: case K_U16: case K_S32: case K_U32: case K_S64: case K_U64:
        return lower_int(p->kind, obj, out);
    case K_F32: case K_F64: {
        double d = PyFloat_AsDouble(obj);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        out->kind = (uint8_t)p->kind;
        if (p->kind == K_F32)
            out->of.f32 = (float)d;
        else
            out->of.f64 = d;
        return 0;
    }
    case K_CHAR:
        if (!PyUnicode_Check(obj) || PyUnicode_GET_LENGTH(obj) != 1)
            return type_error("a one-character str", obj);
        out->kind = K_CHAR;
        out->of.character = PyUnicode_READ_CHAR(obj, 0);
        return 0;
    case K_STRING: {
        if (!PyUnicode_Check(obj))
            return type_error("str", obj);
        Py_ssize_t size;
        const char *data = PyUnicode_AsUTF8AndSize(obj, &size);
        if (data == NULL)
            return -1;
        lower_name(&out->of.string, data, size);
        out->kind = K_STRING;
        return 0;
    }
    case P_LATIN1:
        return latin1_to_utf8(obj, out);
    case P_BYTES: {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
            return -1;
        vallist_t items;
        W.vallist_new_uninit(&items, (size_t)view.len);
        const unsigned char *src = view.buf;
        for (Py_ssize_t i = 0; i < view.len; i++) {
            items.data[i].kind = K_U8;
            items.data[i].of.u8 = src[i];
        }
        PyBuffer_Release(&view);
        out->kind = K_LIST;
        out->of.list = items;
        return 0;
    }
    case K_LIST: case K_TUPLE:
        return lower_seq(p, obj, out, ctx);
    case K_RECORD: {
        if (!PyDict_Check(obj))
            return type_error("dict", obj);
        valrecord_t rec;
        W.valrecord_new_uninit(&rec, (size_t)p->n);
        for (Py_ssize_t i = 0; i < p->n; i++) {
            memset(&rec.data[i].val, 0, sizeof(val_t));
            lower_name(&rec.data[i].name, p->cnames[i], p->cname_lens[i]);
        }
        for (Py_ssize_t i = 0; i < p->n; i++) {
            PyObject *field = PyDict_GetItemWithError(obj, p->names[i]);
            if (field == NULL && PyErr_Occurred()) {
                W.valrecord_delete(&rec);
                return -1;
            }
            if (lower(p->kids[i], field ? field : Py_None, &rec.data[i].val, ctx) < 0) {
                W.valrecord_delete(&rec);
                return -1;
            }
        }
        out->kind = K_RECORD;
        out->of.record = rec;
        return 0;
    }
    case K_VARIANT: {
        if (!PyObject_TypeCheck(obj, (PyTypeObject *)Variant_type))
            return type_error("Variant", obj);
        PyObject *tag = PyObject_GetAttr(obj, str_tag);
        if (tag == NULL)
            return -1;
        Py_ssize_t i = find_str(p, tag);
        Py_DECREF(tag);
        if (i < 0) {
            if (i == -1)
                PyErr_SetString(PyExc_ValueError, "variant tag not in the function's type");
            return -1;
        }
        val_t *box = NULL;
        if (p->kids[i] != NULL) {
            PyObject *payload = PyObject_GetAttr(obj, str_payload);
            if (payload == NULL)
                return -1;
            box = lower_boxed(p->kids[i], payload, ctx);
            Py_DECREF(payload);
            if (box == NULL)
                return -1;
        }
        lower_name(&out->of.variant.discriminant, p->cnames[i], p->cname_lens[i]);
        out->of.variant.val = box;
        out->kind = K_VARIANT;
        return 0;
    }
    case K_ENUM: {
        if (!PyUnicode_Check(obj))
            return type_error("str", obj);
        Py_ssize_t i = find_str(p, obj);
        if (i < 0) {
            if (i == -1)
                PyErr_Format(PyExc_ValueError, "%R is not a case of the enum", obj);
            return -1;
        }
        lower_name(&out->of.enumeration, p->cnames[i], p->cname_lens[i]);
        out->kind = K_ENUM;
        return 0;
    }
    case K_FLAGS: {
        PyObject *seq = PySequence_Fast(obj, "expected a set of flag names");
        if (seq == NULL)
            return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        Py_ssize_t *found = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
        if (found == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t f = 0; f < n; f++) {
            found[f] = find_str(p, PySequence_Fast_GET_ITEM(seq, f));
            if (found[f] < 0) {
                if (found[f] == -1)
                    PyErr_Format(PyExc_ValueError, "%R is not a flag of the type",
                                 PySequence_Fast_GET_ITEM(seq, f));
                PyMem_Free(found);
                Py_DECREF(seq);
                return -1;
            }
        }
        Py_DECREF(seq);
        valflags_t flags;
        W.valflags_new_uninit(&flags, (size_t)n);
        for (Py_ssize_t f = 0; f < n; f++)
            lower_name(&flags.data[f], p->cnames[found[f]], p->cname_lens[found[f]]);
        PyMem_Free(found);
        out->kind = K_FLAGS;
        out->of.flags = flags;
        return 0;
    }
    case K_OPTION: {
        val_t *box = NULL;
        if (obj != Py_None && (box = lower_boxed(p->kids[0], obj, ctx)) == NULL)
            return -1;
        out->kind = K_OPTION;
        out->of.option = box;
        return 0;
    }
    case K_RESULT: {
        bool ok = PyObject_TypeCheck(obj, (PyTypeObject *)Ok_type);
        if (!ok && !PyObject_TypeCheck(obj, (PyTypeObject *)Err_type))
            return type_error("Ok or Err", obj);
        const plan_t *kid = p->kids[ok ? 0 : 1];
        val_t *box = NULL;
        if (kid != NULL) {
            PyObject *payload = PyObject_GetAttr(obj, str_value);
            if (payload == NULL)
                return -1;
            box = lower_boxed(kid, payload, ctx);
            Py_DECREF(payload);
            if (box == NULL)
                return -1;
        }
        out->kind = K_RESULT;
        out->of.result.is_ok = ok;
        out->of.result.val = box;
        return 0;
    }
    case P_OWN: case P_BORROW:
        return lower_resource(p, obj, out, ctx);
    }
    PyErr_Format(PyExc_SystemError, "plan kind %d cannot be lowered", p->kind);
    return -1;
}

/* ---- HostFunc: one host function as wasmtime calls it --------------------------------------- */

#define MAX_PARAMS 16

/* A function's value plans, a host function's or an export's. */
typedef struct {
    Py_ssize_t nparams;
    plan_t *params[MAX_PARAMS];
    plan_t *result; /* NULL: the function returns nothing */
} signature_t;

/* Plans for `params` (a tuple of plan specs) and `result` (a spec or None); -1 with an exception.
   Once only: an object whose earlier fill failed half-way keeps what it made (its dealloc frees it). */
static int signature_fill(signature_t *sig, PyObject *params, PyObject *result) {
    if (sig->nparams > 0 || sig->result != NULL) {
        PyErr_SetString(PyExc_TypeError, "a function's value plans are made once");
        return -1;
    }
    if (PyTuple_GET_SIZE(params) > MAX_PARAMS) {
        PyErr_Format(PyExc_ValueError, "functions take at most %d parameters here", MAX_PARAMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(params); i++) {
        if ((sig->params[i] = plan_new(PyTuple_GET_ITEM(params, i))) == NULL)
            return -1;
        sig->nparams = i + 1;
    }
    if (result != Py_None && (sig->result = plan_new(result)) == NULL)
        return -1;
    return 0;
}

static void signature_free(signature_t *sig) {
    for (Py_ssize_t i = 0; i < sig->nparams; i++)
        plan_free(sig->params[i]);
    plan_free(sig->result);
}

typedef struct {
    PyObject_HEAD
    PyObject *impl;      /* called with the canonical arguments; a str: that method of the first */
    PyObject *on_error;  /* on_error(exception) -> str: the trap message (and any bookkeeping) */
    signature_t sig;
} HostFunc;

/* Calls and drops served here since the process started (under the GIL). */
static unsigned long long calls_served, drops_served;

static void HostFunc_dealloc(HostFunc *self) {
    Py_XDECREF(self->impl);
    Py_XDECREF(self->on_error);
    signature_free(&self->sig);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int HostFunc_init(HostFunc *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"impl", "params", "result", "on_error", NULL};
    PyObject *impl, *params, *result, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OO", kwlist, &impl, &PyTuple_Type, &params, &result,
                                     &on_error))
        return -1;
    if (self->impl != NULL) {
        PyErr_SetString(PyExc_TypeError, "HostFunc is initialised once");
        return -1;
    }
    if (PyUnicode_Check(impl) && PyTuple_GET_SIZE(params) == 0) {
        PyErr_SetString(PyExc_ValueError, "a method needs the object it is called on as its first parameter");
        return -1;
    }
    if (signature_fill(&self->sig, params, result) < 0)
        return -1;
    Py_INCREF(impl);
    self->impl = impl;
    Py_INCREF(on_error);
    self->on_error = on_error;
    return 0;
}

static PyTypeObject HostFuncType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasm_runtime._hostcall.HostFunc",
    .tp_basicsize = sizeof(HostFunc),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "HostFunc(impl, params, result, on_error): a host function with its value plans; "
              "impl is a callable, or the name of a method of the first argument.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HostFunc_init,
    .tp_dealloc = (destructor)HostFunc_dealloc,
};

/* The pending Python exception as a wasmtime error, through the function's on_error. */
static wt_error_t *error_from_exception(PyObject *on_error) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *message = PyObject_CallOneArg(on_error, value ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    const char *text = message && PyUnicode_Check(message) ? PyUnicode_AsUTF8(message) : NULL;
    if (text == NULL) {
        PyErr_WriteUnraisable(on_error);
        text = "host function failed";
    }
    wt_error_t *err = W.error_new(text);
    Py_XDECREF(message);
    return err;
}

static wt_error_t *call_host(void *env, wt_context_t *ctx, const void *ty, val_t *args, size_t nargs,
                          val_t *results, size_t nresults) {
    (void)ty;
    HostFunc *self = env;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *argv[MAX_PARAMS];
    Py_ssize_t lifted = 0;
    PyObject *res = NULL;
    wt_error_t *err = NULL;
    calls_served++;
    const signature_t *sig = &self->sig;
    if ((Py_ssize_t)nargs != sig->nparams || nresults != (sig->result ? 1u : 0u)) {
        PyErr_Format(PyExc_TypeError, "host function called with %zu arguments and %zu results; its type has %zd and %d",
                     nargs, nresults, sig->nparams, sig->result ? 1 : 0);
        goto fail;
    }
    for (; lifted < sig->nparams; lifted++)
        if ((argv[lifted] = lift(sig->params[lifted], &args[lifted], ctx)) == NULL)
            goto fail;
    res = PyUnicode_Check(self->impl) ? PyObject_VectorcallMethod(self->impl, argv, (size_t)lifted, NULL)
                                      : PyObject_Vectorcall(self->impl, argv, (size_t)lifted, NULL);
    if (res == NULL)
        goto fail;
    if (sig->result != NULL) {
        if (lower(sig->result, res, &results[0], ctx) < 0)
            goto fail;
    } else if (res != Py_None) {
        PyErr_Format(PyExc_TypeError, "host function without a result returned %.200s", Py_TYPE(res)->tp_name);
        goto fail;
    }
    goto done;
fail:
    err = error_from_exception(self->on_error);
done:
    Py_XDECREF(res);
    for (Py_ssize_t i = 0; i < lifted; i++)
        Py_DECREF(argv[i]);
    PyGILState_Release(gil);
    return err;
}

/* The guest dropped its last handle of `rep`: out of the store's table, and `env(obj)` for an
 * object whose class has an `on_drop` of its own (most have nothing to do). */
static wt_error_t *drop_resource(void *env, wt_context_t *ctx, uint32_t rep) {
    PyGILState_STATE gil = PyGILState_Ensure();
    wt_error_t *err = NULL;
    drops_served++;
    Table *t = W.context_get_data(ctx);
    PyObject *obj = t == NULL ? NULL : table_find(t, rep, true, false);
    PyObject *res = Py_None;
    Py_INCREF(res);
    if (obj != NULL && _PyType_Lookup(Py_TYPE(obj), str_on_drop) != base_on_drop) {
        Py_DECREF(res);
        res = PyObject_CallOneArg((PyObject *)env, obj);
    }
    Py_XDECREF(obj);
    if (res == NULL || PyErr_Occurred()) {
        /* The destructor is written not to raise; if it does, the guest's drop traps with it. */
        PyErr_WriteUnraisable((PyObject *)env);
        err = W.error_new("dropping a host resource failed");
    }
    Py_XDECREF(res);
    PyGILState_Release(gil);
    return err;
}

/* wasmtime drops a linker's functions on whatever thread frees it, possibly at exit. */
static void release_env(void *env) {
    if (!Py_IsInitialized() || _Py_IsFinalizing())
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)env);
    PyGILState_Release(gil);
}

/* ---- Export: a guest's function, called from Python ---------------------------------------
 *
 * wasmtime-py's Func.__call__ asks wasmtime for the function's type, converts each argument
 * through several ctypes calls and Python objects, and post_return is one more ctypes call: about
 * 7 us for a call without arguments, more than the memory probe's guest code takes. An Export
 * lowers and lifts by the plans made once for the instance, and calls and post-returns at once,
 * with the GIL released while wasm runs (host calls take it back). */

static bool initialised(void);

#define FUNC_MAX 32 /* bytes of a wasmtime_component_func_t (16 in wasmtime 49), copied */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    unsigned char func[FUNC_MAX];
    wt_context_t *ctx;
    PyObject *error_from; /* error_from(address) -> the exception for a wasmtime_error_t (taken) */
    signature_t sig;
} Export;

static void Export_dealloc(Export *self) {
    Py_XDECREF(self->error_from);
    signature_free(&self->sig);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Export_init(Export *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"func", "context", "params", "result", "error_from", NULL};
    Py_buffer func;
    unsigned long long ctx;
    PyObject *params, *result, *error_from;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*KO!OO", kwlist, &func, &ctx, &PyTuple_Type, &params, &result,
                                     &error_from))
        return -1;
    int rc = -1;
    if (self->error_from != NULL) {
        PyErr_SetString(PyExc_TypeError, "Export is initialised once");
    } else if (func.len <= 0 || func.len > FUNC_MAX || ctx == 0) {
        PyErr_Format(PyExc_ValueError, "Export needs a function of 1-%d bytes and a context", FUNC_MAX);
    } else if (initialised() && signature_fill(&self->sig, params, result) == 0) {
        memcpy(self->func, func.buf, (size_t)func.len);
        self->ctx = (wt_context_t *)(uintptr_t)ctx;
        Py_INCREF(error_from);
        self->error_from = error_from;
        rc = 0;
    }
    PyBuffer_Release(&func);
    return rc;
}

/* Raises the exception error_from makes of `err`, which it takes over. */
static void raise_from_error(Export *self, wt_error_t *err) {
    PyObject *address = PyLong_FromVoidPtr(err);
    PyObject *exc = address ? PyObject_CallOneArg(self->error_from, address) : NULL;
    Py_XDECREF(address);
    if (exc == NULL)
        return; /* error_from's own failure is what is raised */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static PyObject *Export_call(Export *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)
        return PyErr_Format(PyExc_TypeError, "an export takes no keyword arguments");
    const signature_t *sig = &self->sig;
    if (nargs != sig->nparams)
        return PyErr_Format(PyExc_TypeError, "the export takes %zd arguments, not %zd", sig->nparams, nargs);
    val_t vals[MAX_PARAMS];
    Py_ssize_t lowered = 0;
    PyObject *out = NULL;
    for (; lowered < nargs; lowered++)
        if (lower(sig->params[lowered], args[lowered], &vals[lowered], self->ctx) < 0)
            goto done;
    val_t result;
    memset(&result, 0, sizeof result);
    wt_error_t *err;
    Py_BEGIN_ALLOW_THREADS
    err = W.func_call(self->func, self->ctx, vals, (size_t)nargs, sig->result ? &result : NULL, sig->result ? 1 : 0);
    Py_END_ALLOW_THREADS
    if (err != NULL) {
        raise_from_error(self, err);
        goto done;
    }
    out = sig->result ? lift(sig->result, &result, self->ctx) : Py_NewRef(Py_None);
    if (sig->result)
        W.val_delete(&result);
    Py_BEGIN_ALLOW_THREADS
    err = W.func_post_return(self->func, self->ctx);
    Py_END_ALLOW_THREADS
    if (err != NULL && out == NULL) {
        W.error_delete(err); /* the lift's exception is the one raised */
    } else if (err != NULL) {
        Py_CLEAR(out);
        raise_from_error(self, err);
    }
done:
    for (Py_ssize_t i = 0; i < lowered; i++)
        W.val_delete(&vals[i]);
    return out;
}

static PyObject *Export_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    return Export_call((Export *)self, args, nargsf, kwnames);
}

/* The store's epoch deadline, `ticks` beyond the current epoch, set before a call: through
 * wasmtime-py it is a ctypes call, which releases the GIL and so lets another thread take it in the
 * middle of a request (10 us median, 17 us mean a reused hello in process, where this is a store). */
static PyObject *Export_set_epoch_deadline(Export *self, PyObject *arg) {
    unsigned long long ticks = PyLong_AsUnsignedLongLong(arg);
    if (ticks == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    W.context_set_epoch_deadline(self->ctx, (uint64_t)ticks);
    Py_RETURN_NONE;
}

static PyMethodDef Export_methods[] = {
    {"set_epoch_deadline", (PyCFunction)Export_set_epoch_deadline, METH_O,
     "set_epoch_deadline(ticks): the function's store traps (or calls its deadline callback) once the "
     "engine's epoch has moved `ticks` beyond where it is now."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Export_tp_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    return PyVectorcall_Call(self, args, kwargs);
}

static PyObject *Export_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Export *self = (Export *)PyType_GenericNew(type, args, kwds);
    if (self != NULL)
        self->vectorcall = Export_vectorcall;
    return (PyObject *)self;
}

static PyTypeObject ExportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasm_runtime._hostcall.Export",
    .tp_basicsize = sizeof(Export),
    .tp_vectorcall_offset = offsetof(Export, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Export(func: bytes, context, params, result, error_from): a guest's function with its "
              "value plans; calling it calls the function and then its post-return.",
    .tp_new = Export_new,
    .tp_init = (initproc)Export_init,
    .tp_dealloc = (destructor)Export_dealloc,
    .tp_call = Export_tp_call,
    .tp_methods = Export_methods,
};

static PyObject *mod_bind_table(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned long long ctx;
    PyObject *table;
    if (!PyArg_ParseTuple(args, "KO!", &ctx, &TableType, &table) || !initialised())
        return NULL;
    if (ctx == 0)
        return PyErr_Format(PyExc_ValueError, "bind_table needs a store context");
    W.context_set_data((wt_context_t *)(uintptr_t)ctx, table);
    Py_RETURN_NONE;
}

/* ---- module functions -------------------------------------------------------------------- */

/* After a definition that handed `env` (one reference) to wasmtime: on refusal, take it back. */
static PyObject *defined(wt_error_t *err, PyObject *env) {
    if (err == NULL)
        Py_RETURN_NONE;
    Py_DECREF(env);
    raise_wasmtime_error(err, "wasmtime refused the definition");
    return NULL;
}

static bool initialised(void) {
    if (!ready)
        PyErr_SetString(PyExc_RuntimeError, "wasm_runtime._hostcall.init() has not run");
    return ready;
}

static PyObject *mod_add_func(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned long long instance;
    const char *name;
    Py_ssize_t name_len;
    PyObject *func;
    if (!PyArg_ParseTuple(args, "Ks#O!", &instance, &name, &name_len, &HostFuncType, &func) || !initialised())
        return NULL;
    Py_INCREF(func); /* released by wasmtime through release_env */
    return defined(W.add_func((void *)(uintptr_t)instance, name, (size_t)name_len, call_host, func, release_env),
                   func);
}

static PyObject *mod_add_resource(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned long long instance, resource_type;
    const char *name;
    Py_ssize_t name_len;
    PyObject *dtor;
    if (!PyArg_ParseTuple(args, "Ks#KO", &instance, &name, &name_len, &resource_type, &dtor) || !initialised())
        return NULL;
    if (!PyCallable_Check(dtor))
        return PyErr_Format(PyExc_TypeError, "dtor must be callable");
    Py_INCREF(dtor); /* released by wasmtime through release_env */
    return defined(W.add_resource((void *)(uintptr_t)instance, name, (size_t)name_len,
                                  (const void *)(uintptr_t)resource_type, drop_resource, dtor, release_env),
                   dtor);
}

static int take_address(PyObject *addresses, const char *name, void **slot) {
    PyObject *value = PyDict_GetItemString(addresses, name);
    if (value == NULL) {
        PyErr_Format(PyExc_KeyError, "init: no address for %s", name);
        return -1;
    }
    *slot = PyLong_AsVoidPtr(value);
    if (*slot == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "init: null address for %s", name);
        return -1;
    }
    return 0;
}

#define TAKE(field, cname) if (take_address(addresses, cname, (void **)&W.field) < 0) return NULL

static PyObject *mod_init(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *addresses, *ok, *err, *variant, *on_drop;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyDict_Type, &addresses, &ok, &err, &variant, &on_drop))
        return NULL;
    if (!PyType_Check(ok) || !PyType_Check(err) || !PyType_Check(variant))
        return PyErr_Format(PyExc_TypeError, "init: Ok, Err and Variant must be classes");
    TAKE(error_new, "wasmtime_error_new");
    TAKE(error_message, "wasmtime_error_message");
    TAKE(error_delete, "wasmtime_error_delete");
    TAKE(byte_vec_new, "wasm_byte_vec_new");
    TAKE(byte_vec_new_uninit, "wasm_byte_vec_new_uninitialized");
    TAKE(byte_vec_delete, "wasm_byte_vec_delete");
    TAKE(vallist_new_uninit, "wasmtime_component_vallist_new_uninit");
    TAKE(vallist_delete, "wasmtime_component_vallist_delete");
    TAKE(valtuple_new_uninit, "wasmtime_component_valtuple_new_uninit");
    TAKE(valtuple_delete, "wasmtime_component_valtuple_delete");
    TAKE(valrecord_new_uninit, "wasmtime_component_valrecord_new_uninit");
    TAKE(valrecord_delete, "wasmtime_component_valrecord_delete");
    TAKE(valflags_new_uninit, "wasmtime_component_valflags_new_uninit");
    TAKE(val_new, "wasmtime_component_val_new");
    TAKE(val_free, "wasmtime_component_val_free");
    TAKE(resource_any_to_host, "wasmtime_component_resource_any_to_host");
    TAKE(resource_host_rep, "wasmtime_component_resource_host_rep");
    TAKE(resource_host_new, "wasmtime_component_resource_host_new");
    TAKE(resource_host_delete, "wasmtime_component_resource_host_delete");
    TAKE(resource_host_to_any, "wasmtime_component_resource_host_to_any");
    TAKE(add_func, "wasmtime_component_linker_instance_add_func");
    TAKE(add_resource, "wasmtime_component_linker_instance_add_resource");
    TAKE(context_get_data, "wasmtime_context_get_data");
    TAKE(context_set_data, "wasmtime_context_set_data");
    TAKE(func_call, "wasmtime_component_func_call");
    TAKE(func_post_return, "wasmtime_component_func_post_return");
    TAKE(val_delete, "wasmtime_component_val_delete");
    TAKE(context_set_epoch_deadline, "wasmtime_context_set_epoch_deadline");
    PyObject **slots[] = {&Ok_type, &Err_type, &Variant_type, &base_on_drop};
    PyObject *values[] = {ok, err, variant, on_drop};
    for (size_t i = 0; i < sizeof slots / sizeof *slots; i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*slots[i], values[i]);
    }
    ready = true;
    Py_RETURN_NONE;
}

/* Offsets and sizes as this file sees them, for _crossing.py to compare with wasmtime-py's. */
static PyObject *mod_layout(PyObject *mod, PyObject *unused) {
    (void)mod;
    (void)unused;
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
        "sizeof(val)", (Py_ssize_t)sizeof(val_t),
        "offsetof(val.of)", (Py_ssize_t)offsetof(val_t, of),
        "sizeof(record_entry)", (Py_ssize_t)sizeof(record_entry_t),
        "offsetof(record_entry.val)", (Py_ssize_t)offsetof(record_entry_t, val),
        "offsetof(variant.val)", (Py_ssize_t)offsetof(valvariant_t, val),
        "offsetof(result.val)", (Py_ssize_t)offsetof(valresult_t, val),
        "sizeof(name)", (Py_ssize_t)sizeof(name_t),
        "sizeof(list)", (Py_ssize_t)sizeof(vallist_t),
        "sizeof(flags)", (Py_ssize_t)sizeof(valflags_t),
        "offsetof(list.data)", (Py_ssize_t)offsetof(vallist_t, data));
}

static PyObject *mod_stats(PyObject *mod, PyObject *unused) {
    (void)mod;
    (void)unused;
    return Py_BuildValue("{s:K,s:K}", "calls", calls_served, "drops", drops_served);
}

static PyMethodDef methods[] = {
    {"stats", mod_stats, METH_NOARGS, "{'calls': host calls served, 'drops': resource drops served}."},
    {"init", mod_init, METH_VARARGS,
     "init(addresses, Ok, Err, Variant, on_drop): the library, the host's classes and HostResource.on_drop."},
    {"bind_table", mod_bind_table, METH_VARARGS,
     "bind_table(context_address, table): the ResourceTable host calls from this store use (kept by the caller "
     "for as long as the store runs)."},
    {"add_func", mod_add_func, METH_VARARGS,
     "add_func(linker_instance_address, name: bytes, func: HostFunc): define a host function."},
    {"add_resource", mod_add_resource, METH_VARARGS,
     "add_resource(linker_instance_address, name: bytes, resource_type_address, dtor): define a host resource."},
    {"layout", mod_layout, METH_NOARGS, "The value layout this module was compiled with."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wasm_runtime._hostcall",
    "Host functions called by wasmtime in C: see wasm_runtime/_crossing.py.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hostcall(void) {
    if (PyType_Ready(&HostFuncType) < 0 || PyType_Ready(&TableType) < 0 || PyType_Ready(&ExportType) < 0)
        return NULL;
    str_value = PyUnicode_InternFromString("value");
    str_tag = PyUnicode_InternFromString("tag");
    str_payload = PyUnicode_InternFromString("payload");
    str_resource_id = PyUnicode_InternFromString("resource_id");
    str_on_drop = PyUnicode_InternFromString("on_drop");
    if (!str_value || !str_tag || !str_payload || !str_resource_id || !str_on_drop)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "HostFunc", (PyObject *)&HostFuncType) < 0 ||
        PyModule_AddObjectRef(m, "ResourceTable", (PyObject *)&TableType) < 0 ||
        PyModule_AddObjectRef(m, "Export", (PyObject *)&ExportType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    /* The kind numbers of plans, named as wasmtime names its value kinds (WASMTIME_COMPONENT_*),
     * for _crossing.py to build plans with and to check against wasmtime-py's. */
    PyObject *kinds = Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,"
        "s:i,s:i,s:i,s:i}",
        "BOOL", K_BOOL, "S8", K_S8, "U8", K_U8, "S16", K_S16, "U16", K_U16, "S32", K_S32, "U32", K_U32,
        "S64", K_S64, "U64", K_U64, "F32", K_F32, "F64", K_F64, "CHAR", K_CHAR, "STRING", K_STRING,
        "LIST", K_LIST, "RECORD", K_RECORD, "TUPLE", K_TUPLE, "VARIANT", K_VARIANT, "ENUM", K_ENUM,
        "OPTION", K_OPTION, "RESULT", K_RESULT, "FLAGS", K_FLAGS, "RESOURCE", K_RESOURCE,
        "own", P_OWN, "borrow", P_BORROW, "bytes", P_BYTES, "latin1", P_LATIN1);
    if (kinds == NULL || PyModule_AddObject(m, "KINDS", kinds) < 0) {
        Py_XDECREF(kinds);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_LIVE_RESOURCES", MAX_LIVE_RESOURCES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
