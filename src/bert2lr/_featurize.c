/* Compiled scoring of a bag-of-n-grams linear model.
 *
 * Reproduces scikit-learn's word analyzer (str.lower, token_pattern (?u)\b\w\w+\b, n-grams
 * joined by one space), its sublinear tf, idf and l2 norm, and the dot product with the
 * coefficients, so that serving needs neither scikit-learn's Python analyzer nor scipy.
 * Python's re module defines \w as Py_UNICODE_ISALNUM(c) || c == '_', which is used here too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_features;
    int ngram_min, ngram_max, sublinear, l2;
    char *blob;
    int64_t *offsets;
    double *coef;
    double *idf; /* NULL: no idf weighting */
    double intercept;
    int64_t *slots; /* feature index per slot, -1 when empty */
    uint64_t *slot_hash;
    uint64_t mask;
} LinearModel;

typedef struct {
    char *bytes;
    Py_ssize_t len, cap;
    Py_ssize_t *start, *end;
    Py_ssize_t n_tokens, start_cap, end_cap;
    int64_t *feats;
    Py_ssize_t n_feats, feat_cap;
} Scratch;

static uint64_t hash_bytes(const char *s, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33; /* spread the high bits into the slot index */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static int64_t lookup(const LinearModel *m, const char *s, Py_ssize_t n) {
    uint64_t h = hash_bytes(s, n);
    uint64_t slot = h & m->mask;
    while (m->slots[slot] >= 0) {
        int64_t f = m->slots[slot];
        if (m->slot_hash[slot] == h && m->offsets[f + 1] - m->offsets[f] == n &&
            memcmp(m->blob + m->offsets[f], s, (size_t)n) == 0)
            return f;
        slot = (slot + 1) & m->mask;
    }
    return -1;
}

static int grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap) return 0;
    Py_ssize_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = PyMem_Realloc(*p, (size_t)c * item);
    if (!q) { PyErr_NoMemory(); return -1; }
    *p = q;
    *cap = c;
    return 0;
}

static int put_utf8(Scratch *s, Py_UCS4 c) {
    if (grow((void **)&s->bytes, &s->cap, s->len + 4, 1) < 0) return -1;
    char *b = s->bytes + s->len;
    if (c < 0x80) { b[0] = (char)c; s->len += 1; }
    else if (c < 0x800) { b[0] = (char)(0xC0 | (c >> 6)); b[1] = (char)(0x80 | (c & 0x3F)); s->len += 2; }
    else if (c < 0x10000) {
        b[0] = (char)(0xE0 | (c >> 12)); b[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (char)(0x80 | (c & 0x3F)); s->len += 3;
    } else {
        b[0] = (char)(0xF0 | (c >> 18)); b[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((c >> 6) & 0x3F)); b[3] = (char)(0x80 | (c & 0x3F)); s->len += 4;
    }
    return 0;
}

static int end_token(Scratch *s, Py_ssize_t byte_start, Py_ssize_t n_chars) {
    if (n_chars < 2) { s->len = byte_start; return 0; } /* \w\w+ needs two word characters */
    if (grow((void **)&s->start, &s->start_cap, s->n_tokens + 1, sizeof(Py_ssize_t)) < 0 ||
        grow((void **)&s->end, &s->end_cap, s->n_tokens + 1, sizeof(Py_ssize_t)) < 0)
        return -1;
    s->start[s->n_tokens] = byte_start;
    s->end[s->n_tokens] = s->len;
    s->n_tokens++;
    return put_utf8(s, ' ');
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int score_text(const LinearModel *m, PyObject *text, Scratch *s, double *out) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "every text must be a str");
        return -1;
    }
    PyObject *lower = PyObject_CallMethod(text, "lower", NULL);
    if (!lower) return -1;
    int kind = PyUnicode_KIND(lower);
    const void *data = PyUnicode_DATA(lower);
    Py_ssize_t n = PyUnicode_GET_LENGTH(lower);
    s->len = 0;
    s->n_tokens = 0;
    s->n_feats = 0;
    Py_ssize_t run_chars = 0, run_byte_start = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (Py_UNICODE_ISALNUM(c) || c == '_') {
            if (run_chars == 0) run_byte_start = s->len;
            if (put_utf8(s, c) < 0) goto fail;
            run_chars++;
        } else if (run_chars) {
            if (end_token(s, run_byte_start, run_chars) < 0) goto fail;
            run_chars = 0;
        }
    }
    if (run_chars && end_token(s, run_byte_start, run_chars) < 0) goto fail;
    Py_DECREF(lower);

    for (int g = m->ngram_min; g <= m->ngram_max; g++) {
        for (Py_ssize_t i = 0; i + g <= s->n_tokens; i++) {
            Py_ssize_t a = s->start[i], b = s->end[i + g - 1];
            int64_t f = lookup(m, s->bytes + a, b - a);
            if (f < 0) continue;
            if (grow((void **)&s->feats, &s->feat_cap, s->n_feats + 1, sizeof(int64_t)) < 0) return -1;
            s->feats[s->n_feats++] = f;
        }
    }
    qsort(s->feats, (size_t)s->n_feats, sizeof(int64_t), cmp_i64);
    double dot = 0.0, norm2 = 0.0;
    for (Py_ssize_t i = 0; i < s->n_feats;) {
        Py_ssize_t j = i;
        while (j < s->n_feats && s->feats[j] == s->feats[i]) j++;
        int64_t f = s->feats[i];
        double v = (double)(j - i);
        if (m->sublinear) v = 1.0 + log(v);
        if (m->idf) v *= m->idf[f];
        norm2 += v * v;
        dot += v * m->coef[f];
        i = j;
    }
    if (m->l2 && norm2 > 0.0) dot /= sqrt(norm2);
    *out = dot + m->intercept;
    return 0;
fail:
    Py_DECREF(lower);
    return -1;
}

static void *copy_buffer(Py_buffer *b) {
    void *p = PyMem_Malloc(b->len ? (size_t)b->len : 1);
    if (!p) { PyErr_NoMemory(); return NULL; }
    memcpy(p, b->buf, (size_t)b->len);
    return p;
}

static int LinearModel_init(LinearModel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"vocabulary", "offsets", "coef", "idf", "intercept", "ngram_min",
                             "ngram_max", "sublinear_tf", "l2", NULL};
    Py_buffer blob, offsets, coef, idf;
    double intercept;
    int ngram_min, ngram_max, sublinear, l2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*y*diipp", kwlist, &blob, &offsets, &coef,
                                     &idf, &intercept, &ngram_min, &ngram_max, &sublinear, &l2))
        return -1;
    int rc = -1;
    if (self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "model is already initialised");
        goto done;
    }
    Py_ssize_t n = coef.len / (Py_ssize_t)sizeof(double);
    if (coef.len % sizeof(double) || offsets.len != (n + 1) * (Py_ssize_t)sizeof(int64_t) ||
        (idf.len != 0 && idf.len != coef.len) || ngram_min < 1 || ngram_max < ngram_min) {
        PyErr_SetString(PyExc_ValueError, "inconsistent model arrays");
        goto done;
    }
    const int64_t *off = (const int64_t *)offsets.buf;
    if (off[0] != 0 || off[n] != blob.len) {
        PyErr_SetString(PyExc_ValueError, "vocabulary offsets do not cover the vocabulary");
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (off[i + 1] < off[i]) {
            PyErr_SetString(PyExc_ValueError, "vocabulary offsets are not increasing");
            goto done;
        }
    self->n_features = n;
    self->ngram_min = ngram_min;
    self->ngram_max = ngram_max;
    self->sublinear = sublinear;
    self->l2 = l2;
    self->intercept = intercept;
    if (!(self->blob = copy_buffer(&blob)) || !(self->offsets = copy_buffer(&offsets)) ||
        !(self->coef = copy_buffer(&coef)))
        goto done;
    if (idf.len && !(self->idf = copy_buffer(&idf))) goto done;
    uint64_t size = 16;
    while (size < (uint64_t)n * 2) size <<= 1;
    self->mask = size - 1;
    self->slots = PyMem_Malloc(size * sizeof(int64_t));
    self->slot_hash = PyMem_Malloc(size * sizeof(uint64_t));
    if (!self->slots || !self->slot_hash) { PyErr_NoMemory(); goto done; }
    memset(self->slots, 0xff, size * sizeof(int64_t));
    for (Py_ssize_t f = 0; f < n; f++) {
        const char *s = self->blob + self->offsets[f];
        Py_ssize_t len = self->offsets[f + 1] - self->offsets[f];
        if (lookup(self, s, len) >= 0) {
            PyErr_Format(PyExc_ValueError, "vocabulary entry %zd is a duplicate", f);
            goto done;
        }
        uint64_t h = hash_bytes(s, len), slot = h & self->mask;
        while (self->slots[slot] >= 0) slot = (slot + 1) & self->mask;
        self->slots[slot] = f;
        self->slot_hash[slot] = h;
    }
    rc = 0;
done:
    PyBuffer_Release(&blob);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&coef);
    PyBuffer_Release(&idf);
    return rc;
}

static void LinearModel_dealloc(LinearModel *self) {
    PyMem_Free(self->blob);
    PyMem_Free(self->offsets);
    PyMem_Free(self->coef);
    PyMem_Free(self->idf);
    PyMem_Free(self->slots);
    PyMem_Free(self->slot_hash);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *LinearModel_decision_function(LinearModel *self, PyObject *texts) {
    if (!self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "model is not initialised");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(texts, "texts must be a sequence of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(double));
    Scratch s = {0};
    if (!result) goto fail;
    double *out = (double *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++)
        if (score_text(self, PySequence_Fast_GET_ITEM(seq, i), &s, &out[i]) < 0) goto fail;
    PyMem_Free(s.bytes); PyMem_Free(s.start); PyMem_Free(s.end); PyMem_Free(s.feats);
    Py_DECREF(seq);
    return result;
fail:
    PyMem_Free(s.bytes); PyMem_Free(s.start); PyMem_Free(s.end); PyMem_Free(s.feats);
    Py_XDECREF(result);
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef LinearModel_methods[] = {
    {"decision_function", (PyCFunction)LinearModel_decision_function, METH_O,
     "decision_function(texts) -> bytes of float64 logits, one per text"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinearModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bert2lr._featurize.LinearModel",
    .tp_basicsize = sizeof(LinearModel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A bag-of-n-grams linear model scored in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LinearModel_init,
    .tp_dealloc = (destructor)LinearModel_dealloc,
    .tp_methods = LinearModel_methods,
};

static struct PyModuleDef featurize_module = {
    PyModuleDef_HEAD_INIT, "_featurize", "Compiled scoring of bag-of-n-grams linear models.", -1, NULL,
};

PyMODINIT_FUNC PyInit__featurize(void) {
    if (PyType_Ready(&LinearModelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&featurize_module);
    if (!m) return NULL;
    Py_INCREF(&LinearModelType);
    if (PyModule_AddObject(m, "LinearModel", (PyObject *)&LinearModelType) < 0) {
        Py_DECREF(&LinearModelType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
