/* Compiled scoring of a bag-of-n-grams linear model.
 *
 * Reproduces scikit-learn's word analyzer (str.lower, token_pattern (?u)\b\w\w+\b, n-grams
 * joined by one space), its sublinear tf, idf and l2 norm, and the dot product with the
 * coefficients, so that serving needs neither scikit-learn's Python analyzer nor scipy.
 * A model has one output (two classes: the margin) or K (K classes: a logit each); all K come
 * from one pass over a text's n-grams, K dot products on the same features.
 * Python's re module defines \w as Py_UNICODE_ISALNUM(c) || c == '_', which is used here too.
 *
 * Two types share the tokenizer, the counting and the arithmetic, and differ in how an n-gram
 * becomes a feature:
 * - LinearModel: a vocabulary, n-gram strings looked up in a hash table (n-grams outside it are
 *   dropped);
 * - HashedLinearModel: no vocabulary; the n-gram's UTF-8 bytes are hashed into one of n_buckets
 *   buckets exactly as scikit-learn's HashingVectorizer(alternate_sign=False) does it
 *   (sklearn/feature_extraction/_hashing_fast.pyx): MurmurHash3_x86_32 with seed 0, read as a
 *   signed 32-bit h, bucket abs(h) % n_buckets with abs taken in 64 bits, so that h = -2**31 gives
 *   2**31 % n_buckets, which is what scikit-learn's special case for it computes. Lone surrogates
 *   are encoded as Python's "surrogatepass" would (scikit-learn cannot encode them at all).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Batches are split over POSIX threads where there are some; elsewhere (or built with
 * -DBERT2LR_SINGLE_THREADED, which checks that path on Linux) one thread scores them. */
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#if defined(_POSIX_THREADS) && _POSIX_THREADS > 0 && !defined(BERT2LR_SINGLE_THREADED)
#include <pthread.h>
#define HAVE_THREADS 1
#else
#define HAVE_THREADS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)0)
#endif

/* The longest n-gram scored (in words); bert2lr.limits.MAX_NGRAM must agree (a test checks). */
#define MAX_NGRAM 8
#define MAX_THREADS 8

/* One vocabulary entry per slot, with what scoring needs, so that a lookup touches one cache line. */
typedef struct {
    uint64_t key;
    int64_t feature; /* -1: empty */
    double idf;      /* 1 without idf weighting */
    double coef_idf; /* coef * idf, with one output */
} Slot;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_features;
    Py_ssize_t n_buckets; /* 0: a vocabulary model; else a hashed one, with a slot per bucket (slot b is bucket b) */
    Py_ssize_t n_outputs;
    int ngram_min, ngram_max, sublinear, l2;
    double intercept;  /* with one output */
    double *intercepts; /* with K outputs: K of them */
    double *weights;    /* with K outputs: coef * idf, K per feature, feature after feature */
    Slot *slots;
    uint64_t mask; /* vocabulary models: slots is a hash table of mask + 1 slots */
} LinearModel;

typedef struct {
    uint64_t *tokens; /* per token: hash of its code points; hashed models: where its UTF-8 bytes start */
    unsigned char *bytes; /* hashed models: the tokens' UTF-8 bytes, one space after each */
    Py_ssize_t bytes_cap;
    Py_ssize_t n_tokens, tok_cap;
    uint64_t *keys;
    Py_ssize_t n_keys, key_cap;
    int64_t *found; /* slot index per n-gram found in the vocabulary */
    Py_ssize_t found_cap;
    int64_t *seen; /* small open-addressing table: slot index -> position in uniq */
    Py_ssize_t seen_cap;
    int64_t *uniq, *count;
    Py_ssize_t uniq_cap, count_cap;
    double *dots; /* one per output */
    Py_ssize_t dots_cap;
} Scratch;

#define PREFETCH_DISTANCE 32

static inline uint64_t mix64(uint64_t h) { /* splitmix64's finaliser */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* \w for ASCII, without the Unicode database's function calls: letters, digits, '_'. */
static const unsigned char ascii_word[128] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['_'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline uint64_t token_start(void) { return 1469598103934665603ULL; } /* FNV-1a */
static inline uint64_t token_add(uint64_t h, Py_UCS4 c) { return (h ^ c) * 1099511628211ULL; }

/* An n-gram's key from its tokens' hashes; the same function builds the table. */
static inline uint64_t ngram_key(const uint64_t *tok, int n) {
    uint64_t h = tok[0];
    for (int k = 1; k < n; k++) h = mix64(h) ^ tok[k];
    return mix64(h ^ (uint64_t)n);
}

/* Grow an array to at least `need` items of `item` bytes; -1 (and nothing changed) when that
 * many bytes cannot be counted in a Py_ssize_t or allocated. */
static int grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap) return 0;
    Py_ssize_t most = PY_SSIZE_T_MAX / (Py_ssize_t)item;
    if (need > most) return -1;
    Py_ssize_t c = *cap ? *cap : 256;
    while (c < need) c = c > most / 2 ? most : c * 2;
    void *q = PyMem_RawRealloc(*p, (size_t)c * item); /* the Raw allocator needs no GIL */
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static void scratch_free(Scratch *s) {
    PyMem_RawFree(s->tokens); PyMem_RawFree(s->bytes); PyMem_RawFree(s->keys); PyMem_RawFree(s->found); PyMem_RawFree(s->seen);
    PyMem_RawFree(s->uniq); PyMem_RawFree(s->count); PyMem_RawFree(s->dots);
}

static int push_token(Scratch *s, uint64_t h) {
    if (grow((void **)&s->tokens, &s->tok_cap, s->n_tokens + 1, sizeof(uint64_t)) < 0) return -1;
    s->tokens[s->n_tokens++] = h;
    return 0;
}

/* MurmurHash3_x86_32 (Austin Appleby's public-domain reference, as scikit-learn compiles it), with
 * the 4-byte blocks read little-endian: what scikit-learn computes on the little-endian machines it
 * runs on. */
static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static uint32_t murmurhash3_x86_32(const unsigned char *data, size_t len, uint32_t seed) {
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    uint32_t h = seed, k;
    size_t blocks = len / 4;
    for (size_t i = 0; i < blocks; i++) {
        const unsigned char *b = data + 4 * i;
        k = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        k *= c1; k = rotl32(k, 15); k *= c2;
        h ^= k; h = rotl32(h, 13); h = h * 5 + 0xe6546b64;
    }
    const unsigned char *tail = data + 4 * blocks;
    k = 0;
    switch (len & 3) {
    case 3: k ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1: k ^= tail[0]; k *= c1; k = rotl32(k, 15); k *= c2; h ^= k;
    }
    h ^= (uint32_t)len; /* the reference takes an int length: texts are far shorter than 2 GiB */
    h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16;
    return h;
}

/* A code point's UTF-8 bytes at p; surrogates too (as Python's "surrogatepass" writes them). */
static inline Py_ssize_t put_utf8(unsigned char *p, Py_UCS4 c) {
    if (c < 0x80) { p[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { p[0] = (unsigned char)(0xC0 | c >> 6); p[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        p[0] = (unsigned char)(0xE0 | c >> 12); p[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        p[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    p[0] = (unsigned char)(0xF0 | c >> 18); p[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
    p[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F)); p[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* Split a lower-cased text into its \w\w+ tokens (scikit-learn's token_pattern). A vocabulary model
 * keeps each token's hash of code points in s->tokens. A hashed model keeps the tokens' UTF-8 bytes
 * in s->bytes, one space after each, and in s->tokens where each starts, with one more entry after
 * the last (its end + 1): so tokens i .. j - 1, joined by one space as scikit-learn joins an n-gram,
 * are the bytes from tokens[i] to tokens[j] - 1. */
static int tokenize(const LinearModel *m, int kind, const void *data, Py_ssize_t n, Scratch *s) {
    int hashing = m->n_buckets > 0;
    s->n_tokens = 0;
    if (hashing) {
        /* Per code point at most its UTF-8 width (by the string's kind) plus a space. */
        Py_ssize_t per = kind == PyUnicode_1BYTE_KIND ? 3 : kind == PyUnicode_2BYTE_KIND ? 4 : 5;
        if (n > (PY_SSIZE_T_MAX - 1) / per || grow((void **)&s->bytes, &s->bytes_cap, per * n + 1, 1) < 0)
            return -1;
    }
    Py_ssize_t run = 0, used = 0, start = 0;
    uint64_t h = token_start();
    for (Py_ssize_t i = 0; i <= n; i++) {
        Py_UCS4 c = i < n ? PyUnicode_READ(kind, data, i) : ' ';
        if (c < 128 ? ascii_word[c] : (Py_UNICODE_ISALNUM(c) || c == '_')) {
            if (hashing) used += put_utf8(s->bytes + used, c);
            else h = token_add(h, c);
            run++;
        } else {
            if (run >= 2) { /* \w\w+ */
                if (push_token(s, hashing ? (uint64_t)start : h) < 0) return -1;
                if (hashing) s->bytes[used++] = ' ';
            } else {
                used = start; /* a one-character run is no token */
            }
            start = used;
            run = 0;
            h = token_start();
        }
    }
    if (hashing) { /* the end + 1 of the last token, not a token */
        if (push_token(s, (uint64_t)used) < 0) return -1;
        s->n_tokens--;
    }
    return 0;
}

static inline int64_t probe(const LinearModel *m, uint64_t key) {
    uint64_t i = key & m->mask;
    while (m->slots[i].feature >= 0) {
        if (m->slots[i].key == key) return (int64_t)i;
        i = (i + 1) & m->mask;
    }
    return -1;
}

/* The slots of a text's n-grams (n from ngram_min to ngram_max, then by position) into s->found:
 * a vocabulary model's n-grams that are in its vocabulary, a hashed model's buckets. Their count;
 * -1 only when memory runs out. */
static Py_ssize_t find_ngrams(const LinearModel *m, Scratch *s) {
    /* At most MAX_NGRAM sizes; the model checked 1 <= ngram_min <= ngram_max <= MAX_NGRAM. */
    Py_ssize_t sizes = m->ngram_max - m->ngram_min + 1;
    if (s->n_tokens > (PY_SSIZE_T_MAX - 1) / sizes) return -1;
    Py_ssize_t most = s->n_tokens * sizes, n_found = 0;
    if (grow((void **)&s->found, &s->found_cap, most + 1, sizeof(int64_t)) < 0) return -1;
    if (m->n_buckets) {
        for (int g = m->ngram_min; g <= m->ngram_max; g++)
            for (Py_ssize_t i = 0; i + g <= s->n_tokens; i++) {
                uint64_t from = s->tokens[i], to = s->tokens[i + g] - 1;
                int32_t h = (int32_t)murmurhash3_x86_32(s->bytes + from, (size_t)(to - from), 0);
                int64_t bucket = (int64_t)(llabs((long long)h) % m->n_buckets);
                PREFETCH(&m->slots[bucket]);
                s->found[n_found++] = bucket;
            }
        return n_found;
    }
    s->n_keys = 0;
    if (grow((void **)&s->keys, &s->key_cap, most + 1, sizeof(uint64_t)) < 0) return -1;
    for (int g = m->ngram_min; g <= m->ngram_max; g++)
        for (Py_ssize_t i = 0; i + g <= s->n_tokens; i++) s->keys[s->n_keys++] = ngram_key(s->tokens + i, g);

    /* Probe with the slots of later keys already on their way from memory. */
    for (Py_ssize_t i = 0; i < s->n_keys && i < PREFETCH_DISTANCE; i++)
        PREFETCH(&m->slots[s->keys[i] & m->mask]);
    for (Py_ssize_t i = 0; i < s->n_keys; i++) {
        if (i + PREFETCH_DISTANCE < s->n_keys)
            PREFETCH(&m->slots[s->keys[i + PREFETCH_DISTANCE] & m->mask]);
        int64_t slot = probe(m, s->keys[i]);
        if (slot >= 0) s->found[n_found++] = slot;
    }
    return n_found;
}

/* Score one lower-cased text into out[0 .. n_outputs - 1]. Touches no Python object, so it runs
 * without the GIL; returns -1 only when memory runs out. */
static int score_text(const LinearModel *m, int kind, const void *data, Py_ssize_t n, Scratch *s, double *out) {
    if (tokenize(m, kind, data, n, s) < 0) return -1;
    Py_ssize_t n_found = find_ngrams(m, s);
    if (n_found < 0) return -1;

    /* Count repeated n-grams. */
    Py_ssize_t size = 64;
    if (n_found > PY_SSIZE_T_MAX / 4 / (Py_ssize_t)sizeof(int64_t)) return -1;
    while (size < 2 * n_found) size *= 2;
    if (grow((void **)&s->seen, &s->seen_cap, size, sizeof(int64_t)) < 0 ||
        grow((void **)&s->uniq, &s->uniq_cap, n_found + 1, sizeof(int64_t)) < 0 ||
        grow((void **)&s->count, &s->count_cap, n_found + 1, sizeof(int64_t)) < 0)
        return -1;
    memset(s->seen, 0xff, (size_t)size * sizeof(int64_t));
    Py_ssize_t n_uniq = 0;
    for (Py_ssize_t i = 0; i < n_found; i++) {
        int64_t slot = s->found[i];
        uint64_t j = mix64((uint64_t)slot) & (uint64_t)(size - 1);
        while (s->seen[j] >= 0 && s->uniq[s->seen[j]] != slot) j = (j + 1) & (uint64_t)(size - 1);
        if (s->seen[j] < 0) {
            s->seen[j] = n_uniq;
            s->uniq[n_uniq] = slot;
            s->count[n_uniq++] = 1;
        } else {
            s->count[s->seen[j]]++;
        }
    }
    if (m->n_outputs == 1) {
        double dot = 0.0, norm2 = 0.0;
        for (Py_ssize_t i = 0; i < n_uniq; i++) {
            const Slot *e = &m->slots[s->uniq[i]];
            double tf = (double)s->count[i];
            if (m->sublinear) tf = 1.0 + log(tf);
            double v = tf * e->idf;
            norm2 += v * v;
            dot += tf * e->coef_idf;
        }
        if (m->l2 && norm2 > 0.0) dot /= sqrt(norm2);
        *out = dot + m->intercept;
        return 0;
    }
    /* K outputs: the same features, tf and norm, K sums (each in the order the one output sums in). */
    Py_ssize_t K = m->n_outputs;
    if (grow((void **)&s->dots, &s->dots_cap, K, sizeof(double)) < 0) return -1;
    double *dot = s->dots, norm2 = 0.0;
    for (Py_ssize_t k = 0; k < K; k++) dot[k] = 0.0;
    for (Py_ssize_t i = 0; i < n_uniq; i++) {
        const Slot *e = &m->slots[s->uniq[i]];
        double tf = (double)s->count[i];
        if (m->sublinear) tf = 1.0 + log(tf);
        double v = tf * e->idf;
        norm2 += v * v;
        const double *w = m->weights + e->feature * K;
        for (Py_ssize_t k = 0; k < K; k++) dot[k] += tf * w[k];
    }
    int scaled = m->l2 && norm2 > 0.0;
    double norm = scaled ? sqrt(norm2) : 1.0;
    for (Py_ssize_t k = 0; k < K; k++) out[k] = (scaled ? dot[k] / norm : dot[k]) + m->intercepts[k];
    return 0;
}

/* Decode one vocabulary entry (strict UTF-8, surrogates allowed as "surrogatepass" writes them)
 * into the hashes of its space-separated tokens; -1 for bytes that are not UTF-8, an empty token
 * or more than max_tokens tokens. */
static int entry_tokens(const unsigned char *b, Py_ssize_t len, uint64_t *tok, int max_tokens) {
    int n = 0, in_token = 0;
    uint64_t h = token_start();
    for (Py_ssize_t i = 0; i <= len;) {
        Py_UCS4 c;
        Py_ssize_t width = i == len ? 0 : b[i] < 0x80 ? 1 : (b[i] & 0xE0) == 0xC0 ? 2 : (b[i] & 0xF0) == 0xE0 ? 3
                         : (b[i] & 0xF8) == 0xF0 ? 4 : -1;
        if (width < 0 || width > len - i) return -1;
        for (Py_ssize_t k = 1; k < width; k++)
            if ((b[i + k] & 0xC0) != 0x80) return -1;
        switch (width) {
        case 0: c = ' '; break;
        case 1: c = b[i]; break;
        case 2: c = ((Py_UCS4)(b[i] & 0x1F) << 6) | (b[i + 1] & 0x3F); break;
        case 3: c = ((Py_UCS4)(b[i] & 0x0F) << 12) | ((Py_UCS4)(b[i + 1] & 0x3F) << 6) | (b[i + 2] & 0x3F); break;
        default:
            c = ((Py_UCS4)(b[i] & 0x07) << 18) | ((Py_UCS4)(b[i + 1] & 0x3F) << 12) | ((Py_UCS4)(b[i + 2] & 0x3F) << 6)
                | (b[i + 3] & 0x3F);
        }
        /* Overlong forms would give a second spelling of the same n-gram. */
        static const Py_UCS4 least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (width > 1 && (c < least[width] || c > 0x10FFFF)) return -1;
        i += width ? width : 1;
        if (c == ' ') {
            if (!in_token || n == max_tokens) return -1;
            tok[n++] = h;
            h = token_start();
            in_token = 0;
        } else {
            h = token_add(h, c);
            in_token = 1;
        }
    }
    return n;
}

/* Array items by memcpy: a buffer from Python need not be aligned. */
static inline int64_t item_i64(const Py_buffer *b, Py_ssize_t i) {
    int64_t v;
    memcpy(&v, (const char *)b->buf + i * (Py_ssize_t)sizeof v, sizeof v);
    return v;
}

static inline double item_f64(const Py_buffer *b, Py_ssize_t i) {
    double v;
    memcpy(&v, (const char *)b->buf + i * (Py_ssize_t)sizeof v, sizeof v);
    return v;
}

/* What both constructors share: the intercept(s), the n-gram range, the arrays' sizes and the slots.
 * n_buckets 0: a vocabulary model, whose entries blob and offsets describe; else a hashed model of
 * n_buckets buckets (blob and offsets NULL). Every size comes from a model file: none is trusted. */
static int model_init(LinearModel *self, Py_ssize_t n_buckets, const Py_buffer *blob, const Py_buffer *offsets,
                      const Py_buffer *coef, const Py_buffer *idf, PyObject *intercept_arg, int ngram_min,
                      int ngram_max, int sublinear, int l2) {
    Py_buffer intercepts = {0};
    double intercept = 0.0;
    int rc = -1, built = 0, have_intercepts = 0;
    Py_ssize_t K = 1, n;
    if (self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "model is already initialised");
        goto done;
    }
    /* The intercept: a number (one output), or the bytes of K float64 (K outputs, and then coef
     * holds K rows of n coefficients, row after row). */
    if (PyObject_CheckBuffer(intercept_arg) && !PyFloat_Check(intercept_arg)) {
        if (PyObject_GetBuffer(intercept_arg, &intercepts, PyBUF_SIMPLE) < 0) goto done;
        have_intercepts = 1;
        K = intercepts.len / (Py_ssize_t)sizeof(double);
        if (intercepts.len % (Py_ssize_t)sizeof(double) || K < 1) {
            PyErr_SetString(PyExc_ValueError, "the intercepts must be 1 or more float64, 8 bytes each");
            goto done;
        }
        for (Py_ssize_t k = 0; k < K; k++)
            if (!isfinite(item_f64(&intercepts, k))) {
                PyErr_SetString(PyExc_ValueError, "the intercept is not finite");
                goto done;
            }
        if (K == 1) intercept = item_f64(&intercepts, 0);
    } else {
        intercept = PyFloat_AsDouble(intercept_arg);
        if (intercept == -1.0 && PyErr_Occurred()) goto done;
    }
    if (ngram_min < 1 || ngram_max < ngram_min || ngram_max > MAX_NGRAM) {
        PyErr_Format(PyExc_ValueError, "ngram range (%d, %d) is not within 1..%d", ngram_min, ngram_max, MAX_NGRAM);
        goto done;
    }
    if (n_buckets) {
        n = n_buckets;
        if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / K ||
            coef->len != n * K * (Py_ssize_t)sizeof(double) ||
            (idf->len != 0 && idf->len != n * (Py_ssize_t)sizeof(double))) {
            PyErr_SetString(PyExc_ValueError, "inconsistent model arrays: need n_buckets coefficients per output "
                                              "and 0 or n_buckets idf weights, each 8 bytes");
            goto done;
        }
    } else {
        n = coef->len / (Py_ssize_t)sizeof(double) / K;
        if (coef->len % ((Py_ssize_t)sizeof(double) * K) || offsets->len % (Py_ssize_t)sizeof(int64_t) ||
            offsets->len / (Py_ssize_t)sizeof(int64_t) - 1 != n ||
            (idf->len != 0 && idf->len != n * (Py_ssize_t)sizeof(double))) {
            PyErr_SetString(PyExc_ValueError, "inconsistent model arrays: need n coefficients per output, n + 1 "
                                              "offsets and 0 or n idf weights, each 8 bytes");
            goto done;
        }
    }
    /* A vocabulary's table has at most 4n slots (a power of two at least 2n); buckets have one each. */
    if (n > PY_SSIZE_T_MAX / 4 / (Py_ssize_t)sizeof(Slot) || (K > 1 && n > PY_SSIZE_T_MAX / 8 / K)) {
        PyErr_SetString(PyExc_ValueError, "too many features");
        goto done;
    }
    if (!isfinite(intercept)) {
        PyErr_SetString(PyExc_ValueError, "the intercept is not finite");
        goto done;
    }
    if (!n_buckets) {
        if (item_i64(offsets, 0) != 0 || item_i64(offsets, n) != blob->len) {
            PyErr_SetString(PyExc_ValueError, "vocabulary offsets do not cover the vocabulary");
            goto done;
        }
        /* From 0 to the vocabulary's length and never decreasing: so every entry lies inside it. */
        for (Py_ssize_t i = 0; i < n; i++)
            if (item_i64(offsets, i + 1) < item_i64(offsets, i)) {
                PyErr_SetString(PyExc_ValueError, "vocabulary offsets are not increasing");
                goto done;
            }
    }
    self->n_features = n;
    self->n_buckets = n_buckets;
    self->n_outputs = K;
    self->ngram_min = ngram_min;
    self->ngram_max = ngram_max;
    self->sublinear = sublinear;
    self->l2 = l2;
    self->intercept = intercept;
    uint64_t size = 16;
    if (n_buckets) size = (uint64_t)n_buckets;
    else while (size < (uint64_t)n * 2) size <<= 1;
    self->mask = size - 1;
    self->slots = PyMem_Malloc((size_t)size * sizeof(Slot));
    if (!self->slots) { PyErr_NoMemory(); goto done; }
    built = 1;
    if (K > 1) {
        self->intercepts = PyMem_Malloc((size_t)K * sizeof(double));
        self->weights = PyMem_Malloc(n ? (size_t)n * (size_t)K * sizeof(double) : 1);
        if (!self->intercepts || !self->weights) { PyErr_NoMemory(); goto done; }
        for (Py_ssize_t k = 0; k < K; k++) self->intercepts[k] = item_f64(&intercepts, k);
    }
    for (uint64_t i = 0; i < size; i++) self->slots[i].feature = -1;
    const unsigned char *bytes = blob ? (const unsigned char *)blob->buf : NULL;
    uint64_t tok[MAX_NGRAM];
    for (Py_ssize_t f = 0; f < n; f++) {
        int g = 0;
        if (!n_buckets) {
            int64_t start = item_i64(offsets, f);
            g = entry_tokens(bytes + start, (Py_ssize_t)(item_i64(offsets, f + 1) - start), tok, ngram_max);
            if (g < ngram_min || g > ngram_max) {
                PyErr_Format(PyExc_ValueError, "vocabulary entry %zd is not a %d..%d-gram of word tokens", f,
                             ngram_min, ngram_max);
                goto done;
            }
        }
        double weight = idf->len ? item_f64(idf, f) : 1.0, c = item_f64(coef, f);
        int finite = 1;
        for (Py_ssize_t k = 0; k < K; k++) {
            double ck = item_f64(coef, k * n + f);
            finite &= isfinite(ck);
            if (K > 1) self->weights[f * K + k] = ck * weight;
        }
        if (!isfinite(weight) || !finite) {
            PyErr_Format(PyExc_ValueError, "the %s of feature %zd is not finite", finite ? "idf" : "coefficient",
                         f);
            goto done;
        }
        if (n_buckets) { /* bucket f is slot f */
            self->slots[f] = (Slot){0, f, weight, c * weight};
            continue;
        }
        uint64_t key = ngram_key(tok, g);
        if (probe(self, key) >= 0) {
            PyErr_Format(PyExc_ValueError, "vocabulary entry %zd repeats an earlier entry's key", f);
            goto done;
        }
        uint64_t i = key & self->mask;
        while (self->slots[i].feature >= 0) i = (i + 1) & self->mask;
        self->slots[i] = (Slot){key, f, weight, c * weight};
    }
    rc = 0;
done:
    if (rc < 0 && built) {
        /* A half-built table must not be scored: the model stays uninitialised. */
        PyMem_Free(self->slots);
        PyMem_Free(self->intercepts);
        PyMem_Free(self->weights);
        self->slots = NULL;
        self->intercepts = self->weights = NULL;
    }
    if (have_intercepts) PyBuffer_Release(&intercepts);
    return rc;
}

static int LinearModel_init(LinearModel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"vocabulary", "offsets", "coef", "idf", "intercept", "ngram_min",
                             "ngram_max", "sublinear_tf", "l2", NULL};
    Py_buffer blob, offsets, coef, idf;
    PyObject *intercept_arg;
    int ngram_min, ngram_max, sublinear, l2;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*y*Oiipp", kwlist, &blob, &offsets, &coef,
                                     &idf, &intercept_arg, &ngram_min, &ngram_max, &sublinear, &l2))
        return -1;
    int rc = model_init(self, 0, &blob, &offsets, &coef, &idf, intercept_arg, ngram_min, ngram_max, sublinear, l2);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&coef);
    PyBuffer_Release(&idf);
    return rc;
}

/* Every bucket index (at most 2**31 - 1) fits an int32, as in scikit-learn, which takes fewer buckets still
 * (n_features < 2**31 - 1); bert2lr.linear.MAX_BUCKETS must agree. */
#define MAX_BUCKETS ((long long)1 << 31)

static int HashedLinearModel_init(LinearModel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"n_buckets", "coef", "idf", "intercept", "ngram_min", "ngram_max", "sublinear_tf",
                             "l2", NULL};
    Py_buffer coef, idf;
    PyObject *n_buckets_arg, *intercept_arg;
    int ngram_min, ngram_max, sublinear, l2, overflow = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oy*y*Oiipp", kwlist, &n_buckets_arg, &coef, &idf,
                                     &intercept_arg, &ngram_min, &ngram_max, &sublinear, &l2))
        return -1;
    int rc = -1;
    long long n_buckets = -1;
    if (!PyLong_Check(n_buckets_arg) || PyBool_Check(n_buckets_arg)) {
        PyErr_Format(PyExc_TypeError, "n_buckets must be an int, not %.100s", Py_TYPE(n_buckets_arg)->tp_name);
        goto done;
    }
    n_buckets = PyLong_AsLongLongAndOverflow(n_buckets_arg, &overflow);
    if (n_buckets == -1 && PyErr_Occurred()) goto done;
    if (overflow || n_buckets < 1 || n_buckets > MAX_BUCKETS) {
        PyErr_SetString(PyExc_ValueError, "n_buckets is not within 1..2**31");
        goto done;
    }
    rc = model_init(self, (Py_ssize_t)n_buckets, NULL, NULL, &coef, &idf, intercept_arg, ngram_min, ngram_max,
                    sublinear, l2);
done:
    PyBuffer_Release(&coef);
    PyBuffer_Release(&idf);
    return rc;
}

static void LinearModel_dealloc(LinearModel *self) {
    PyMem_Free(self->slots);
    PyMem_Free(self->intercepts);
    PyMem_Free(self->weights);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

typedef struct {
    const LinearModel *model;
    PyObject **texts; /* lower-cased */
    double *out; /* n_outputs per text */
    Py_ssize_t start, stop;
    int failed;
} Work;

static void *score_range(void *arg) {
    Work *w = arg;
    Scratch s = {0};
    for (Py_ssize_t i = w->start; i < w->stop && !w->failed; i++) {
        PyObject *t = w->texts[i];
        if (score_text(w->model, PyUnicode_KIND(t), PyUnicode_DATA(t), PyUnicode_GET_LENGTH(t), &s,
                       &w->out[i * w->model->n_outputs]) < 0)
            w->failed = 1;
    }
    scratch_free(&s);
    return NULL;
}

static PyObject *LinearModel_decision_function(LinearModel *self, PyObject *args) {
    PyObject *texts;
    int threads = 1;
    if (!PyArg_ParseTuple(args, "O|i", &texts, &threads)) return NULL;
    if (!self->slots) {
        PyErr_SetString(PyExc_RuntimeError, "model is not initialised");
        return NULL;
    }
    /* A tuple, not the caller's list: a lower() written in Python could shrink a list under us. */
    PyObject *seq = PySequence_Tuple(texts);
    if (!seq) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "texts must be a sequence of str");
        }
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *result = NULL;
    PyObject **lowered = NULL;
    Py_ssize_t ready = 0;
    int failed = 0;
    Py_ssize_t K = self->n_outputs;
    if (n > PY_SSIZE_T_MAX / (Py_ssize_t)sizeof(double) / K) { PyErr_NoMemory(); goto done; }
    result = PyBytes_FromStringAndSize(NULL, n * K * (Py_ssize_t)sizeof(double));
    lowered = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *));
    if (!result || !lowered) { PyErr_NoMemory(); goto done; }
    /* str.lower() needs the GIL (and gives the full Unicode case mapping that scikit-learn uses). */
    for (; ready < n; ready++) {
        PyObject *t = PyTuple_GET_ITEM(seq, ready);
        if (!PyUnicode_Check(t)) {
            PyErr_SetString(PyExc_TypeError, "every text must be a str");
            goto done;
        }
        PyObject *low = PyObject_CallMethod(t, "lower", NULL);
        if (!low) goto done;
        if (!PyUnicode_Check(low)) { /* a str subclass may override lower() */
            PyErr_Format(PyExc_TypeError, "text %zd: lower() returned %.100s, not a str", ready, Py_TYPE(low)->tp_name);
            Py_DECREF(low);
            goto done;
        }
        lowered[ready] = low;
    }
    double *out = (double *)PyBytes_AS_STRING(result);
    /* Threads pay off on batches only; one thread scores small batches in place. */
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (!HAVE_THREADS || threads < 1 || n < 64 * (Py_ssize_t)threads) threads = 1;
    Work work[MAX_THREADS];
    Py_ssize_t per = (n + threads - 1) / threads;
    for (int k = 0; k < threads; k++)
        work[k] = (Work){self, lowered, out, k * per, (k + 1) * per < n ? (k + 1) * per : n, 0};
    Py_BEGIN_ALLOW_THREADS
#if HAVE_THREADS
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int k = 1; k < threads; k++) {
        if (pthread_create(&ids[k], NULL, score_range, &work[k]) != 0) score_range(&work[k]); /* here instead */
        else started[k] = 1;
    }
    score_range(&work[0]);
    for (int k = 1; k < threads; k++)
        if (started[k]) pthread_join(ids[k], NULL);
#else
    score_range(&work[0]);
#endif
    Py_END_ALLOW_THREADS
    for (int k = 0; k < threads; k++) failed |= work[k].failed;
    if (failed) PyErr_NoMemory();
done:
    for (Py_ssize_t i = 0; i < ready; i++) Py_XDECREF(lowered[i]);
    PyMem_Free(lowered);
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

static PyMethodDef LinearModel_methods[] = {
    {"decision_function", (PyCFunction)LinearModel_decision_function, METH_VARARGS,
     "decision_function(texts, threads=1) -> bytes of float64 logits: n_outputs per text, text after text"},
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

/* The same object and methods as LinearModel; only the constructor differs. */
static PyTypeObject HashedLinearModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bert2lr._featurize.HashedLinearModel",
    .tp_basicsize = sizeof(LinearModel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "HashedLinearModel(n_buckets, coef, idf, intercept, ngram_min, ngram_max, sublinear_tf, l2): a "
              "linear model on n-grams hashed into n_buckets as scikit-learn's HashingVectorizer("
              "alternate_sign=False) hashes them, scored in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HashedLinearModel_init,
    .tp_dealloc = (destructor)LinearModel_dealloc,
    .tp_methods = LinearModel_methods,
};

static struct PyModuleDef featurize_module = {
    PyModuleDef_HEAD_INIT, "_featurize", "Compiled scoring of bag-of-n-grams linear models.", -1, NULL,
};

PyMODINIT_FUNC PyInit__featurize(void) {
    if (PyType_Ready(&LinearModelType) < 0 || PyType_Ready(&HashedLinearModelType) < 0) return NULL;
    PyObject *m = PyModule_Create(&featurize_module);
    if (!m) return NULL;
    Py_INCREF(&LinearModelType);
    if (PyModule_AddObject(m, "LinearModel", (PyObject *)&LinearModelType) < 0) {
        Py_DECREF(&LinearModelType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&HashedLinearModelType);
    if (PyModule_AddObject(m, "HashedLinearModel", (PyObject *)&HashedLinearModelType) < 0) {
        Py_DECREF(&HashedLinearModelType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_NGRAM", MAX_NGRAM) < 0 ||
        PyModule_AddIntConstant(m, "THREADED", HAVE_THREADS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
