/*
 * libFuzzer target for the C core of jpeg_requantize (native/jpeg_requantize/requantize.c),
 * built with AddressSanitizer and UndefinedBehaviorSanitizer by `python -m fuzz.run`.
 *
 * Input: one byte of target quality, one byte of options, then the JPEG. Whatever the bytes,
 * requantize_transcode must return (no crash, no leak, no undefined behaviour), and a file
 * it accepts must come out as a JPEG that libjpeg reads back without a single warning.
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "requantize.h"

/* JPEG standard Annex K, tables K.1 and K.2, natural order (as shared/domain/quality.py). */
static const unsigned int standard_luminance[64] = {
    16, 11, 10, 16, 24,  40,  51,  61,  12, 12, 14, 19, 26,  58,  60,  55,
    14, 13, 16, 24, 40,  57,  69,  56,  14, 17, 22, 29, 51,  87,  80,  62,
    18, 22, 37, 56, 68,  109, 103, 77,  24, 35, 55, 64, 81,  104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
};
static const unsigned int standard_chrominance[64] = {
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
};

/* A few bytes that start like an ICC profile: the core writes whatever it is given. */
static const unsigned char icc_profile[160] = {0, 0, 0, 160, 'l', 'c', 'm', 's'};

enum option { OPTIMIZE_HUFFMAN = 1, WITH_ICC_PROFILE = 2, SCAN_LIMIT = 4, PROGRESSIVE = 8 };

static void ijg_table(const unsigned int *base, int quality, unsigned int *table) {
    long scale = quality < 50 ? 5000 / quality : 200 - quality * 2;
    for (int k = 0; k < 64; k++) {
        long value = ((long)base[k] * scale + 50) / 100;
        table[k] = (unsigned int)(value < 1 ? 1 : value > 255 ? 255 : value);
    }
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
} strict_errors;

static void escape(j_common_ptr cinfo) { longjmp(((strict_errors *)cinfo->err)->escape, 1); }

static void escape_on_warning(j_common_ptr cinfo, int level) {
    if (level < 0) {
        escape(cinfo);
    }
}

/* Our output must read back cleanly: a file libjpeg complains about is a bug of ours. */
static int reads_back(const unsigned char *data, size_t size) {
    struct jpeg_decompress_struct cinfo;
    strict_errors errors;
    volatile int readable = 0;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&errors.pub);
    errors.pub.error_exit = escape;
    errors.pub.emit_message = escape_on_warning;
    jpeg_create_decompress(&cinfo);
    if (setjmp(errors.escape) == 0) {
        jpeg_mem_src(&cinfo, data, (unsigned long)size);
        jpeg_read_header(&cinfo, TRUE);
        jpeg_read_coefficients(&cinfo);
        jpeg_finish_decompress(&cinfo);
        readable = 1;
    }
    jpeg_destroy_decompress(&cinfo);
    return readable;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) {
        return 0;
    }
    requantize_job work;
    memset(&work, 0, sizeof work);
    int quality = 1 + data[0] % 100;
    ijg_table(standard_luminance, quality, work.luminance);
    ijg_table(standard_chrominance, quality, work.chrominance);
    work.optimize_huffman = (data[1] & OPTIMIZE_HUFFMAN) != 0;
    if (data[1] & WITH_ICC_PROFILE) {
        work.icc_profile = icc_profile;
        work.icc_profile_size = sizeof icc_profile;
    }
    work.progressive = (data[1] & PROGRESSIVE) != 0;
    work.max_scans = (data[1] & SCAN_LIMIT) ? 1 + (data[1] >> 4) : 0;
    /* What the service allows at most goes through its pixel cap first; here a lower cap
     * keeps every input quick (a 600-byte frame header can claim 4 gigapixels). */
    work.max_pixels = 4000000;
    work.source = data + 2;
    work.source_size = size - 2;

    enum requantize_outcome outcome = requantize_transcode(&work);
    if (outcome == REQUANTIZE_DONE) {
        if (work.output == NULL || !reads_back(work.output, work.output_size)) {
            fprintf(stderr, "accepted a file and wrote one libjpeg cannot read back\n");
            abort();
        }
        free(work.output);
    } else if (work.output != NULL || work.message[0] == '\0') {
        fprintf(stderr, "refused without a reason, or left its output behind\n");
        abort();
    }
    return 0;
}
