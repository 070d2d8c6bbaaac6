/*
 * flowinfo: print a summary of a swift-tarflow model file (.tflow).
 *
 * Written against protobuf-c and the generated code of Spec/flowir.proto only, to show that a
 * model header is plain protobuf any language can read. The file layout (Spec/ModelFile.md):
 *
 *   0..7    magic "TFLOWMDL"
 *   8..11   uint32 LE format version (1)
 *   12..15  uint32 LE flags (0, or 0x1 when some tensor is not row-major)
 *   16..23  uint64 LE N = byte length of the serialized ModelHeader
 *   24..    the ModelHeader, then zero padding up to data_offset = round_up(24 + N, 64)
 *   data    each tensor's bytes at data_offset + offset (a multiple of 64), byte_size long
 *
 * Every size and index read from the file is checked against the file length (or the value
 * table) before it is used. Errors are one line on stderr naming the file; exit status 1.
 */

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "flowir.pb-c.h"

#define PREAMBLE_SIZE 24u
#define DATA_ALIGNMENT 64u
#define SUPPORTED_VERSION 1u
#define FLAG_TENSOR_LAYOUTS 0x1u /* some tensor is not row-major (TensorInfo.layout) */
#define TENSOR_ROWS_SHOWN 5u

static const char kMagic[8] = {'T', 'F', 'L', 'O', 'W', 'M', 'D', 'L'};

/* What fail() must release: the open file, the raw header bytes, the parsed header. */
static const char *g_path = "";
static FILE *g_file;
static unsigned char *g_buf;
static Flowir__ModelHeader *g_header;

/* One line on stderr naming the file and the problem, then exit 1. */
static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "flowinfo: %s: ", g_path);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (g_header) flowir__model_header__free_unpacked(g_header, NULL);
    free(g_buf);
    if (g_file) fclose(g_file);
    exit(1);
}

static uint32_t read_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t read_le64(const unsigned char *p)
{
    return (uint64_t)read_le32(p) | (uint64_t)read_le32(p + 4) << 32;
}

/* Strings come from the file: escape control bytes so a hostile name cannot drive the terminal. */
static void print_str(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

static void print_quoted(const char *s)
{
    putchar('"');
    print_str(s);
    putchar('"');
}

/* A file string made fit for a one-line error message: escaped as print_str does, cut at 120
 * bytes. Returns a static buffer, so one call per message. */
static const char *safe(const char *s)
{
    static char out[128 * 4 + 4];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p && o < 120 * 4; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    if (o >= 120 * 4) o += (size_t)snprintf(out + o, sizeof out - o, "...");
    out[o] = '\0';
    return out;
}

/* Element size in bytes, or 0 for a dtype this format does not define. */
static uint64_t dtype_size(Flowir__DType dtype)
{
    switch (dtype) {
    case FLOWIR__DTYPE__DTYPE_FLOAT32: return 4;
    case FLOWIR__DTYPE__DTYPE_FLOAT16: return 2;
    case FLOWIR__DTYPE__DTYPE_BFLOAT16: return 2;
    case FLOWIR__DTYPE__DTYPE_INT64: return 8;
    default: return 0;
    }
}

/* "float32" for DTYPE_FLOAT32; the enum name or number for anything else. */
static void print_dtype(Flowir__DType dtype)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&flowir__dtype__descriptor,
                                                                       (int)dtype);
    if (v == NULL) {
        printf("dtype(%d)", (int)dtype);
        return;
    }
    const char *name = v->name;
    if (dtype != FLOWIR__DTYPE__DTYPE_UNSPECIFIED && strncmp(name, "DTYPE_", 6) == 0)
        name += 6;
    for (; *name; name++)
        putchar(dtype == FLOWIR__DTYPE__DTYPE_UNSPECIFIED ? *name : tolower((unsigned char)*name));
}

/* The op's enum name from the generated descriptor; NULL for a value the schema lacks. */
static const char *op_name(Flowir__OpCode op)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&flowir__op_code__descriptor,
                                                                       (int)op);
    return v ? v->name : NULL;
}

static void print_op(Flowir__OpCode op, int width)
{
    const char *name = op_name(op);
    if (name) {
        printf("%-*s", width, name);
    } else {
        char buf[32];
        snprintf(buf, sizeof buf, "OP_?(%d)", (int)op);
        printf("%-*s", width, buf);
    }
}

static void print_dims(size_t n, Flowir__Dim **dims)
{
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        if (i) putchar(',');
        const Flowir__Dim *d = dims[i];
        switch (d->kind_case) {
        case FLOWIR__DIM__KIND_SIZE: printf("%" PRId64, d->size); break;
        case FLOWIR__DIM__KIND_SYMBOL: print_str(d->symbol); break;
        default: putchar('?'); break;
        }
    }
    putchar(']');
}

static void print_int_list(size_t n, const int64_t *xs)
{
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%" PRId64 : "%" PRId64, xs[i]);
    putchar(']');
}

static void print_index_list(size_t n, const uint32_t *xs)
{
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ",%" PRIu32 : "%" PRIu32, xs[i]);
    putchar(']');
}

/* Reads exactly `len` bytes at `offset`; a short read means the file changed under us. */
static void read_at(FILE *f, uint64_t offset, unsigned char *buf, size_t len)
{
    if (fseeko(f, (off_t)offset, SEEK_SET) != 0)
        fail("cannot seek to byte %" PRIu64 ": %s", offset, strerror(errno));
    if (len && fread(buf, 1, len, f) != len)
        fail("cannot read %zu bytes at byte %" PRIu64 "%s", len, offset,
             ferror(f) ? ": read error" : ": unexpected end of file");
}

static void validate_graph(const Flowir__Graph *gr);

/* Checks the header against the file length and the schema's rules the summary relies on. */
static void validate(const Flowir__ModelHeader *h, uint32_t file_version, uint32_t flags,
                     uint64_t data_offset, uint64_t file_size)
{
    int any_layout = 0;
    if (h->format_version != file_version)
        fail("header format_version %" PRIu32 " differs from the file's version %" PRIu32,
             h->format_version, file_version);

    const uint64_t data_size = file_size - data_offset; /* caller ensured data_offset <= size */
    for (size_t i = 0; i < h->n_tensors; i++) {
        const Flowir__TensorInfo *t = h->tensors[i];
        if (t->offset % DATA_ALIGNMENT != 0)
            fail("tensor %zu (\"%s\"): offset %" PRIu64 " is not a multiple of %u", i, safe(t->name),
                 t->offset, DATA_ALIGNMENT);
        if (t->offset > data_size || t->byte_size > data_size - t->offset)
            fail("tensor %zu (\"%s\"): bytes %" PRIu64 "..+%" PRIu64
                 " lie past the end of the data section (%" PRIu64 " bytes); file truncated?",
                 i, safe(t->name), t->offset, t->byte_size, data_size);
        uint64_t expected = dtype_size(t->dtype);
        if (expected == 0)
            fail("tensor %zu (\"%s\"): unknown dtype %d", i, safe(t->name), (int)t->dtype);
        for (size_t d = 0; d < t->n_shape; d++)
            if (t->shape[d] < 0)
                fail("tensor %zu (\"%s\"): negative dimension %" PRId64, i, safe(t->name), t->shape[d]);
        /* Stored elements: the shape's, with panels32 rows padded to a multiple of 32. */
        switch (t->layout) {
        case FLOWIR__LAYOUT__LAYOUT_ROW_MAJOR: break;
        case FLOWIR__LAYOUT__LAYOUT_PANELS32:
            any_layout = 1;
            if (t->n_shape != 2 || t->dtype == FLOWIR__DTYPE__DTYPE_INT64)
                fail("tensor %zu (\"%s\"): layout panels32 needs a rank-2 float tensor", i, safe(t->name));
            break;
        default: fail("tensor %zu (\"%s\"): unknown layout %d", i, safe(t->name), (int)t->layout);
        }
        for (size_t d = 0; d < t->n_shape; d++) {
            uint64_t dim = (uint64_t)t->shape[d];
            if (t->layout == FLOWIR__LAYOUT__LAYOUT_PANELS32 && d == 0) dim = (dim + 31) / 32 * 32;
            if (__builtin_mul_overflow(expected, dim, &expected))
                fail("tensor %zu (\"%s\"): shape overflows 64 bits", i, safe(t->name));
        }
        if (expected != t->byte_size)
            fail("tensor %zu (\"%s\"): byte_size %" PRIu64 " but dtype, shape and layout give %" PRIu64,
                 i, safe(t->name), t->byte_size, expected);
    }

    if (any_layout != ((flags & FLAG_TENSOR_LAYOUTS) != 0))
        fail(any_layout ? "a tensor has a layout but the prefix lacks flag 0x1 (tensor layouts)"
                        : "the prefix has flag 0x1 (tensor layouts) but every tensor is row-major");

    for (size_t g = 0; g < h->n_graphs; g++) validate_graph(h->graphs[g]);

    for (size_t c = 0; c < h->n_compiled; c++) {
        const Flowir__CompiledFunction *cf = h->compiled[c];
        if (cf->graph == NULL) fail("compiled function \"%s\" has no graph", safe(cf->name));
        validate_graph(cf->graph);
        const size_t nv = cf->graph->n_values;
        for (size_t p = 0; p < cf->n_plans; p++) {
            const Flowir__MemoryPlan *mp = cf->plans[p];
            if (mp->n_value_buffer != nv)
                fail("compiled function \"%s\", plan %zu: %zu buffer entries for %zu values",
                     safe(cf->name), p, mp->n_value_buffer, nv);
            for (size_t v = 0; v < nv; v++)
                if (mp->value_buffer[v] < -1 || (mp->value_buffer[v] >= 0 &&
                                                 (size_t)mp->value_buffer[v] >= mp->n_buffers))
                    fail("compiled function \"%s\", plan %zu: value %zu has buffer %" PRId32
                         " of %zu", safe(cf->name), p, v, mp->value_buffer[v], mp->n_buffers);
            for (size_t b = 0; b < mp->n_buffers; b++) {
                const Flowir__BufferPlacement *bp = mp->buffers[b];
                if (bp->offset % DATA_ALIGNMENT != 0 || bp->offset > mp->arena_bytes ||
                    bp->size > mp->arena_bytes - bp->offset)
                    fail("compiled function \"%s\", plan %zu: buffer %zu (offset %" PRIu64
                         ", %" PRIu64 " bytes) is misaligned or outside the %" PRIu64 "-byte arena",
                         safe(cf->name), p, b, bp->offset, bp->size, mp->arena_bytes);
            }
        }
    }
}

/* Every value index a graph holds is below its value count. */
static void validate_graph(const Flowir__Graph *gr)
{
    const size_t nv = gr->n_values;
    for (size_t i = 0; i < gr->n_inputs; i++)
        if (gr->inputs[i] >= nv)
            fail("graph \"%s\": input %zu refers to value %" PRIu32 " of %zu", safe(gr->name), i,
                 gr->inputs[i], nv);
    for (size_t i = 0; i < gr->n_outputs; i++)
        if (gr->outputs[i] >= nv)
            fail("graph \"%s\": output %zu refers to value %" PRIu32 " of %zu", safe(gr->name), i,
                 gr->outputs[i], nv);
    for (size_t n = 0; n < gr->n_nodes; n++) {
        const Flowir__Node *node = gr->nodes[n];
        for (size_t i = 0; i < node->n_inputs; i++)
            if (node->inputs[i] >= nv)
                fail("graph \"%s\": node %zu input %zu refers to value %" PRIu32 " of %zu",
                     safe(gr->name), n, i, node->inputs[i], nv);
        for (size_t i = 0; i < node->n_outputs; i++)
            if (node->outputs[i] >= nv)
                fail("graph \"%s\": node %zu output %zu refers to value %" PRIu32 " of %zu",
                     safe(gr->name), n, i, node->outputs[i], nv);
    }
}

/* The shortest %g form that reads back as the same double (0.05, not 0.05000000000000000277). */
static void print_double(double x)
{
    char buf[40];
    for (int digits = 15; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, x);
        if (strtod(buf, NULL) == x || x != x) break;
    }
    fputs(buf, stdout);
}

static void print_metadata(const Flowir__ModelHeader *h)
{
    printf("metadata: %zu\n", h->n_metadata);
    for (size_t i = 0; i < h->n_metadata; i++) {
        const Flowir__Metadata *m = h->metadata[i];
        printf("  ");
        print_str(m->key);
        printf(" = ");
        switch (m->value_case) {
        case FLOWIR__METADATA__VALUE_STRING_VALUE: print_quoted(m->string_value); break;
        case FLOWIR__METADATA__VALUE_INT_VALUE: printf("%" PRId64, m->int_value); break;
        case FLOWIR__METADATA__VALUE_DOUBLE_VALUE: print_double(m->double_value); break;
        case FLOWIR__METADATA__VALUE_BOOL_VALUE: printf(m->bool_value ? "true" : "false"); break;
        default: printf("(unset)"); break;
        }
        putchar('\n');
    }
}

static void print_tensors(const Flowir__ModelHeader *h)
{
    uint64_t total = 0;
    for (size_t i = 0; i < h->n_tensors; i++)
        if (__builtin_add_overflow(total, h->tensors[i]->byte_size, &total))
            fail("tensor sizes sum past 64 bits");
    printf("tensors: %zu, %" PRIu64 " bytes\n", h->n_tensors, total);
    size_t shown = h->n_tensors < TENSOR_ROWS_SHOWN ? h->n_tensors : TENSOR_ROWS_SHOWN;
    for (size_t i = 0; i < shown; i++) {
        const Flowir__TensorInfo *t = h->tensors[i];
        printf("  ");
        print_quoted(t->name);
        printf(" ");
        print_dtype(t->dtype);
        printf(" ");
        print_int_list(t->n_shape, t->shape);
        printf(" @%" PRIu64 " %" PRIu64 " bytes%s\n", t->offset, t->byte_size,
               t->layout == FLOWIR__LAYOUT__LAYOUT_PANELS32 ? " panels32" : "");
    }
    if (h->n_tensors > shown)
        printf("  ... %zu more\n", h->n_tensors - shown);
}

static void print_value_list(const char *title, const Flowir__Graph *g, size_t n,
                             const uint32_t *idx)
{
    printf("  %s: %zu\n", title, n);
    for (size_t i = 0; i < n; i++) {
        const Flowir__Value *v = g->values[idx[i]];
        printf("    %%%" PRIu32 " ", idx[i]);
        print_str(v->name);
        printf(": ");
        print_dtype(v->dtype);
        putchar(' ');
        print_dims(v->n_shape, v->shape);
        putchar('\n');
    }
}

struct op_count {
    Flowir__OpCode op;
    size_t count;
};

static int by_count_then_op(const void *a, const void *b)
{
    const struct op_count *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return (x->op > y->op) - (x->op < y->op);
}

static void print_op_histogram(const Flowir__Graph *g)
{
    /* Distinct ops are few (the op set is closed), so a linear scan per node is enough. */
    struct op_count *hist = calloc(g->n_nodes ? g->n_nodes : 1, sizeof *hist);
    if (hist == NULL) fail("out of memory");
    size_t distinct = 0;
    for (size_t n = 0; n < g->n_nodes; n++) {
        Flowir__OpCode op = g->nodes[n]->op;
        size_t k = 0;
        while (k < distinct && hist[k].op != op) k++;
        if (k == distinct) hist[distinct++] = (struct op_count){op, 0};
        hist[k].count++;
    }
    qsort(hist, distinct, sizeof *hist, by_count_then_op);
    printf("  ops:\n");
    for (size_t k = 0; k < distinct; k++) {
        printf("    ");
        print_op(hist[k].op, 18);
        printf(" %zu\n", hist[k].count);
    }
    free(hist);
}

static void print_nodes(const Flowir__Graph *g)
{
    printf("  nodes:\n");
    for (size_t n = 0; n < g->n_nodes; n++) {
        const Flowir__Node *node = g->nodes[n];
        printf("%3zu  ", n);
        print_op(node->op, 16);
        printf(" in=");
        print_index_list(node->n_inputs, node->inputs);
        printf(" out=");
        print_index_list(node->n_outputs, node->outputs);
        if (node->tensor[0] != '\0') {
            printf(" tensor=");
            print_quoted(node->tensor);
        }
        putchar('\n');
    }
}

static void print_graph(const Flowir__Graph *g, int with_nodes)
{
    printf("graph ");
    print_quoted(g->name);
    printf(": %zu values, %zu nodes\n", g->n_values, g->n_nodes);
    print_value_list("inputs", g, g->n_inputs, g->inputs);
    print_value_list("outputs", g, g->n_outputs, g->outputs);
    print_op_histogram(g);
    if (with_nodes) print_nodes(g);
}

/* A compiled function (`tarflow compile`): its optimized graph and stored memory plans. */
static void print_compiled(const Flowir__CompiledFunction *cf)
{
    printf("compiled ");
    print_quoted(cf->name);
    printf(" from ");
    print_quoted(cf->source);
    printf(": %zu values, %zu nodes, %zu plans; digest ", cf->graph->n_values, cf->graph->n_nodes,
           cf->n_plans);
    for (size_t i = 0; i < cf->source_digest.len && i < 8; i++) printf("%02x", cf->source_digest.data[i]);
    printf("%s\n", cf->source_digest.len > 8 ? "..." : "");
    for (size_t p = 0; p < cf->n_plans; p++) {
        const Flowir__MemoryPlan *mp = cf->plans[p];
        printf("  plan ");
        for (size_t b = 0; b < mp->n_bindings; b++) {
            if (b) putchar(',');
            print_str(mp->bindings[b]->symbol);
            printf("=%" PRId64, mp->bindings[b]->size);
        }
        printf(": %zu buffers, arena %" PRIu64 " bytes, naive %" PRIu64 " bytes\n", mp->n_buffers,
               mp->arena_bytes, mp->naive_bytes);
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: flowinfo MODEL.tflow [--nodes]\n"
                 "Prints the header of a swift-tarflow model file: version, metadata, tensor\n"
                 "table, graphs and compiled functions (tarflow compile); --nodes also lists every\n"
                 "node.\n");
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int with_nodes = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--nodes") == 0) {
            with_nodes = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "flowinfo: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path == NULL) {
            path = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL) {
        usage(stderr);
        return 2;
    }
    g_path = path;

    FILE *f = g_file = fopen(path, "rb");
    if (f == NULL) fail("cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) fail("cannot stat: %s", strerror(errno));
    if (!S_ISREG(st.st_mode)) fail("not a regular file");
    const uint64_t file_size = (uint64_t)st.st_size;

    if (file_size < PREAMBLE_SIZE)
        fail("%" PRIu64 " bytes is too short for a model file (the preamble alone is %u)",
             file_size, PREAMBLE_SIZE);
    unsigned char pre[PREAMBLE_SIZE];
    read_at(f, 0, pre, sizeof pre);
    if (memcmp(pre, kMagic, sizeof kMagic) != 0)
        fail("not a model file (magic is not \"TFLOWMDL\")");
    const uint32_t version = read_le32(pre + 8);
    const uint32_t flags = read_le32(pre + 12);
    const uint64_t header_len = read_le64(pre + 16);
    if (version != SUPPORTED_VERSION)
        fail("format version %" PRIu32 " is not supported (this tool reads version %u)", version,
             SUPPORTED_VERSION);
    if (flags & ~FLAG_TENSOR_LAYOUTS)
        fail("unknown flags 0x%08" PRIx32 " (version 1 defines only 0x1, tensor layouts)", flags);
    if (header_len > file_size - PREAMBLE_SIZE)
        fail("header length %" PRIu64 " exceeds the %" PRIu64
             " bytes after the preamble; file truncated?", header_len, file_size - PREAMBLE_SIZE);
    if (header_len > SIZE_MAX) fail("header length %" PRIu64 " too large", header_len);

    /* header_len <= file_size, so neither sum below can overflow. */
    const uint64_t header_end = PREAMBLE_SIZE + header_len;
    const uint64_t data_offset = (header_end + DATA_ALIGNMENT - 1) / DATA_ALIGNMENT * DATA_ALIGNMENT;

    g_buf = malloc(header_len ? (size_t)header_len : 1);
    if (g_buf == NULL) fail("out of memory reading a %" PRIu64 "-byte header", header_len);
    read_at(f, PREAMBLE_SIZE, g_buf, (size_t)header_len);
    Flowir__ModelHeader *h = g_header = flowir__model_header__unpack(NULL, (size_t)header_len, g_buf);
    free(g_buf);
    g_buf = NULL;
    if (h == NULL) fail("the %" PRIu64 "-byte header is not a valid flowir.ModelHeader", header_len);

    /* Padding: whatever of it the file holds must be zero; a file with no tensor data may end
     * before data_offset, but any tensor then fails the range check below. */
    uint64_t pad_end = data_offset < file_size ? data_offset : file_size;
    unsigned char pad[DATA_ALIGNMENT];
    read_at(f, header_end, pad, (size_t)(pad_end - header_end));
    for (uint64_t i = 0; i < pad_end - header_end; i++) {
        if (pad[i] != 0) fail("padding byte at %" PRIu64 " is not zero", header_end + i);
    }
    fclose(f);
    g_file = NULL;

    if (data_offset > file_size && h->n_tensors > 0)
        fail("file ends at %" PRIu64 " before its data section at %" PRIu64 "; file truncated?",
             file_size, data_offset);
    validate(h, version, flags, data_offset > file_size ? file_size : data_offset, file_size);

    printf("file: ");
    print_str(path);
    printf(" (%" PRIu64 " bytes)\n", file_size);
    printf("format version: %" PRIu32 "\n", version);
    printf("header: %" PRIu64 " bytes, data section at %" PRIu64 "\n", header_len, data_offset);
    print_metadata(h);
    print_tensors(h);
    printf("graphs: %zu\n", h->n_graphs);
    for (size_t g = 0; g < h->n_graphs; g++) print_graph(h->graphs[g], with_nodes);
    printf("compiled functions: %zu\n", h->n_compiled);
    for (size_t c = 0; c < h->n_compiled; c++) print_compiled(h->compiled[c]);

    flowir__model_header__free_unpacked(h, NULL);
    g_header = NULL;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "flowinfo: %s: cannot write output\n", path);
        return 1;
    }
    return 0;
}
