/*
 * The C core of jpeg_requantize, free of Python: one JPEG in, the same picture with other
 * quantization tables out. `_native.c` wraps it for Python; the fuzz target in `fuzz/` links
 * it alone, under AddressSanitizer and UndefinedBehaviorSanitizer.
 */
#ifndef JPEG_REQUANTIZE_CORE_H
#define JPEG_REQUANTIZE_CORE_H

#include <stddef.h>

#define REQUANTIZE_TABLE_ENTRIES 64
#define REQUANTIZE_MESSAGE_LENGTH 256

typedef struct {
    /* In: the source file, the target tables (natural order, 1..255), an optional ICC
     * profile to write, and the options. */
    const unsigned char *source;
    size_t source_size;
    unsigned int luminance[REQUANTIZE_TABLE_ENTRIES];
    unsigned int chrominance[REQUANTIZE_TABLE_ENTRIES];
    const unsigned char *icc_profile;
    size_t icc_profile_size;
    int optimize_huffman;
    /* Write a progressive file (libjpeg's default progression) instead of a baseline one. */
    int progressive;
    /* Scans read at most; 0 for no limit. Each scan of a progressive file is a pass over the
     * whole picture, so thousands of them would burn CPU on a file of a few kilobytes. */
    int max_scans;
    /* Pixels a frame may have; 0 for no limit. The caller checks its own cap on the header
     * first; this is the backstop, before libjpeg allocates the coefficient arrays (a frame
     * header of 600 bytes can ask for 4 gigapixels). */
    unsigned long long max_pixels;
    /* Out: on REQUANTIZE_DONE, a malloc'ed file the caller frees; else a reason. */
    unsigned char *output;
    size_t output_size;
    char message[REQUANTIZE_MESSAGE_LENGTH];
} requantize_job;

enum requantize_outcome {
    REQUANTIZE_DONE = 0,
    /* Not a file this module takes, or libjpeg had something to say about it. */
    REQUANTIZE_REFUSED = 1,
    /* More scans than job->max_scans. */
    REQUANTIZE_TOO_MANY_SCANS = 2,
};

/* Thread-safe: everything it touches hangs off `work`. */
enum requantize_outcome requantize_transcode(requantize_job *work);

/* JPEG_LIB_VERSION of the libjpeg this was compiled against (62 for libjpeg-turbo's 6b ABI). */
int requantize_libjpeg_version(void);

#endif
