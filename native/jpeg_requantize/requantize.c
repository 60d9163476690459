/*
 * Re-quantize a JPEG in the DCT domain: read its quantized coefficients with libjpeg-turbo,
 * rescale each one from the source's quantization table to the target table, and write them
 * out again with the target tables. No inverse DCT, no upsampling, no colour conversion, no
 * forward DCT: only entropy decoding, one multiply per coefficient and entropy encoding.
 *
 * The caller decides everything about policy (which tables, whether this file qualifies);
 * this module refuses anything it was not written for, and treats every libjpeg warning as a
 * refusal too, so that a damaged file is never "repaired" silently here and the caller's
 * general path gets to judge it.
 */
#include "requantize.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#if DCTSIZE2 != REQUANTIZE_TABLE_ENTRIES
#error "libjpeg's blocks are not 8x8"
#endif

/* Huffman coding of 8-bit JPEGs carries AC values up to 2^10 - 1 and DC differences up to
 * 2^11 - 1, so every coefficient within +-1023 stays encodable. A valid image re-quantized to
 * coarser tables never comes near it; a hostile one is clamped rather than made unwritable.
 * Both scalings clamp: libjpeg-turbo's decoder accepts coefficients of up to 15 bits from a
 * crafted Huffman table, and its encoder does not check AC magnitudes, so a value above the
 * limit would be written with a symbol the standard tables lack (a corrupt output, found by
 * fuzzing: tests/data/fuzz/requantize/). */
#define MAX_COEFFICIENT 1023

/* How the error manager's escape was taken: a libjpeg error or warning, or our scan limit. */
enum escape { ESCAPE_LIBJPEG = 1, ESCAPE_TOO_MANY_SCANS = 2 };

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
    char message[JMSG_LENGTH_MAX];
} error_manager;

static void on_error(j_common_ptr cinfo) {
    error_manager *errors = (error_manager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, errors->message);
    longjmp(errors->escape, ESCAPE_LIBJPEG);
}

static void on_message(j_common_ptr cinfo, int level) {
    /* Level -1 is a warning: corrupt entropy data, a premature end of file, a bogus marker.
     * libjpeg would carry on with grey blocks; we stop at once. Higher levels are traces. */
    if (level < 0) {
        on_error(cinfo);
    }
}

static enum requantize_outcome refuse(requantize_job *work, const char *why) {
    snprintf(work->message, sizeof work->message, "%s", why);
    return REQUANTIZE_REFUSED;
}

/* Everything about the frame that this module was not written for. */
static const char *unsuitable_frame(const struct jpeg_decompress_struct *source) {
    if (source->data_precision != 8) {
        return "not an 8-bit JPEG";
    }
    if (source->arith_code) {
        return "arithmetic-coded";
    }
    if (source->jpeg_color_space == JCS_GRAYSCALE && source->num_components == 1) {
        return NULL;
    }
    if (source->jpeg_color_space != JCS_YCbCr || source->num_components != 3) {
        return "neither YCbCr nor greyscale";
    }
    /* Chroma at the lowest resolution and luma at most twice it: 4:4:4, 4:2:2, 4:4:0, 4:2:0. */
    const jpeg_component_info *luma = &source->comp_info[0];
    if (luma->h_samp_factor > 2 || luma->v_samp_factor > 2) {
        return "unusual chroma sampling";
    }
    for (int ci = 1; ci < 3; ci++) {
        if (source->comp_info[ci].h_samp_factor != 1 || source->comp_info[ci].v_samp_factor != 1) {
            return "unusual chroma sampling";
        }
    }
    return NULL;
}

/* Multipliers are 0.16 fixed point: a coefficient moving to a table entry at least as coarse
 * is scaled by old/new <= 1, which fits 16 bits and lets a 16-bit multiply do the work (eight
 * or sixteen coefficients per instruction). An entry of 1.0 is stored as 65535, which still
 * rounds every coefficient below 32768 back to itself. */
#define UNIT 65536u

/* |c| * m / 65536, rounded half away from zero: c * old / new for a coarser new table.
 * target_clones compiles it for AVX2 and for plain x86-64, chosen when the module loads. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void scale_down(JCOEF *restrict coefficient, size_t count,
                       const uint16_t *restrict multiplier) {
    for (size_t i = 0; i < count; i += DCTSIZE2) {
        for (int k = 0; k < DCTSIZE2; k++) {
            int16_t value = coefficient[i + k];
            uint16_t magnitude = (uint16_t)(value < 0 ? -value : value);
            uint16_t scaled = (uint16_t)(((uint32_t)magnitude * multiplier[k] + UNIT / 2) >> 16);
            scaled = scaled > MAX_COEFFICIENT ? MAX_COEFFICIENT : scaled;
            coefficient[i + k] = (JCOEF)(value < 0 ? -(int16_t)scaled : (int16_t)scaled);
        }
    }
}

/* The general case, for source tables with some entry coarser than the target's (tables not
 * made the IJG way): a float multiply, clamped to what the encoder can write. */
static void scale_any(JCOEF *coefficient, size_t count, const float *ratio) {
    for (size_t i = 0; i < count; i += DCTSIZE2) {
        for (int k = 0; k < DCTSIZE2; k++) {
            float value = (float)coefficient[i + k] * ratio[k];
            value = value > MAX_COEFFICIENT    ? MAX_COEFFICIENT
                    : value < -MAX_COEFFICIENT ? -MAX_COEFFICIENT
                                               : value;
            coefficient[i + k] = (JCOEF)(value + (value >= 0.0f ? 0.5f : -0.5f));
        }
    }
}

/* Where the rescaling stands: the coefficient arrays libjpeg allocated for each component,
 * the factors per component, and how many block rows of each are already rescaled. */
typedef struct {
    struct jpeg_progress_mgr progress;
    jvirt_barray_ptr (*request_virt_barray)(j_common_ptr, int, boolean, JDIMENSION, JDIMENSION,
                                            JDIMENSION);
    const requantize_job *work;
    error_manager *errors;
    jvirt_barray_ptr arrays[MAX_COMPONENTS];
    int array_count;
    int prepared[MAX_COMPONENTS];
    int coarser_everywhere[MAX_COMPONENTS];
    uint16_t multiplier[MAX_COMPONENTS][DCTSIZE2];
    float ratio[MAX_COMPONENTS][DCTSIZE2];
    JDIMENSION rows_done[MAX_COMPONENTS];
    int rescaled_early;
} requantizer;

/* libjpeg hands the coefficient arrays out only once the whole file is read; remembering
 * them as they are requested lets the progress hook below reach them while reading. */
static jvirt_barray_ptr remember_array(j_common_ptr cinfo, int pool_id, boolean pre_zero,
                                       JDIMENSION blocks_per_row, JDIMENSION number_of_rows,
                                       JDIMENSION max_rows_accessed) {
    requantizer *state = (requantizer *)cinfo->client_data;
    jvirt_barray_ptr array = (*state->request_virt_barray)(cinfo, pool_id, pre_zero,
                                                           blocks_per_row, number_of_rows,
                                                           max_rows_accessed);
    if (state->array_count < MAX_COMPONENTS) {
        state->arrays[state->array_count] = array;
    }
    state->array_count++;
    return array;
}

static void prepare_component(requantizer *state, int ci, const JQUANT_TBL *original) {
    const unsigned int *target = ci == 0 ? state->work->luminance : state->work->chrominance;
    state->coarser_everywhere[ci] = 1;
    for (int k = 0; k < DCTSIZE2; k++) {
        /* Both tables are in natural order in libjpeg's structures. */
        unsigned int from = original->quantval[k], to = target[k];
        state->ratio[ci][k] = (float)from / (float)to;
        if (from > to) {
            state->coarser_everywhere[ci] = 0;
        }
        uint32_t fixed = (from * UNIT + to / 2) / to;
        state->multiplier[ci][k] = (uint16_t)(fixed >= UNIT ? UNIT - 1 : fixed);
    }
    state->prepared[ci] = 1;
}

/* Rescale the block rows of component `ci` from where it stands up to `rows_ready`. */
static void rescale_rows(j_decompress_ptr source, requantizer *state, int ci,
                         JDIMENSION rows_ready) {
    jpeg_component_info *component = &source->comp_info[ci];
    if (!state->prepared[ci]) {
        if (component->quant_table == NULL) {
            ERREXIT(source, JERR_NO_QUANT_TABLE);
        }
        prepare_component(state, ci, component->quant_table);
    }
    size_t count = (size_t)component->width_in_blocks * DCTSIZE2;
    for (JDIMENSION row = state->rows_done[ci]; row < rows_ready; row++) {
        JBLOCKARRAY rows = (*source->mem->access_virt_barray)(
            (j_common_ptr)source, state->arrays[ci], row, 1, TRUE);
        if (state->coarser_everywhere[ci]) {
            scale_down(rows[0][0], count, state->multiplier[ci]);
        } else {
            scale_any(rows[0][0], count, state->ratio[ci]);
        }
    }
    if (rows_ready > state->rows_done[ci]) {
        state->rows_done[ci] = rows_ready;
    }
}

/* Called by jpeg_read_coefficients before each iMCU row it reads, and once a scan's marker
 * has been read (libjpeg counts the scan as it reads its SOS marker), so a file with more
 * scans than allowed stops at the first one too many, before its data is decoded.
 *
 * A single interleaved scan (baseline photos) completes each block row once and for all, so
 * it is rescaled while it is still in the cache: one pass over a 24-megapixel image's 72 MB
 * of coefficients costs a third of the whole transcoding if it is left for later. Progressive
 * and multi-scan files refine blocks scan after scan; they are rescaled once everything is
 * read. */
static void rescale_while_reading(j_common_ptr cinfo) {
    j_decompress_ptr source = (j_decompress_ptr)cinfo;
    requantizer *state = (requantizer *)cinfo->client_data;
    if (state->work->max_scans > 0 && source->input_scan_number > state->work->max_scans) {
        longjmp(state->errors->escape, ESCAPE_TOO_MANY_SCANS);
    }
    if (source->progressive_mode || source->input_scan_number != 1 ||
        source->comps_in_scan != source->num_components) {
        return;
    }
    for (int ci = 0; ci < source->num_components; ci++) {
        jpeg_component_info *component = &source->comp_info[ci];
        JDIMENSION ready = source->input_iMCU_row * (JDIMENSION)component->v_samp_factor;
        if (ready > component->height_in_blocks) {
            ready = component->height_in_blocks;
        }
        rescale_rows(source, state, ci, ready);
        state->rescaled_early = 1;
    }
}

/* Output into a buffer this module owns, so that it can be freed whatever libjpeg was doing
 * when an error stopped it (jpeg_mem_dest's buffers cannot be told apart once they grew). */
typedef struct {
    struct jpeg_destination_mgr pub;
    requantize_job *work;
    size_t capacity;
} growing_destination;

static void start_output(j_compress_ptr cinfo) {
    growing_destination *destination = (growing_destination *)cinfo->dest;
    destination->pub.next_output_byte = destination->work->output;
    destination->pub.free_in_buffer = destination->capacity;
}

static boolean grow_output(j_compress_ptr cinfo) {
    growing_destination *destination = (growing_destination *)cinfo->dest;
    size_t larger = destination->capacity * 2;
    unsigned char *moved = realloc(destination->work->output, larger);
    if (moved == NULL) {
        ERREXIT1(cinfo, JERR_OUT_OF_MEMORY, 0);
    }
    destination->work->output = moved;
    /* libjpeg calls this when the whole buffer is full, whatever free_in_buffer said. */
    destination->pub.next_output_byte = moved + destination->capacity;
    destination->pub.free_in_buffer = larger - destination->capacity;
    destination->capacity = larger;
    return TRUE;
}

static void finish_output(j_compress_ptr cinfo) {
    growing_destination *destination = (growing_destination *)cinfo->dest;
    destination->work->output_size = destination->capacity - destination->pub.free_in_buffer;
}

enum requantize_outcome requantize_transcode(requantize_job *work) {
    struct jpeg_decompress_struct source;
    struct jpeg_compress_struct target;
    error_manager errors;
    requantizer state;
    /* volatile: read after a longjmp back into this frame. */
    volatile int source_created = 0, target_created = 0;
    volatile enum requantize_outcome outcome = REQUANTIZE_DONE;

    memset(&source, 0, sizeof source);
    memset(&target, 0, sizeof target);
    memset(&state, 0, sizeof state);
    source.err = jpeg_std_error(&errors.pub);
    errors.pub.error_exit = on_error;
    errors.pub.emit_message = on_message;
    work->output = NULL;
    work->output_size = 0;

    /* setjmp stands alone in the controlling expression, as the C standard wants it. */
    switch (setjmp(errors.escape)) {
    case 0:
        break;
    case ESCAPE_TOO_MANY_SCANS:
        snprintf(work->message, sizeof work->message, "more than %d scans", work->max_scans);
        outcome = REQUANTIZE_TOO_MANY_SCANS;
        goto done;
    default:
        snprintf(work->message, sizeof work->message, "libjpeg: %s", errors.message);
        outcome = REQUANTIZE_REFUSED;
        goto done;
    }
    jpeg_create_decompress(&source);
    source_created = 1;
    jpeg_mem_src(&source, work->source, (unsigned long)work->source_size);
    jpeg_read_header(&source, TRUE);
    const char *why = unsuitable_frame(&source);
    if (why != NULL) {
        outcome = refuse(work, why);
        goto done;
    }
    if (work->max_pixels > 0 &&
        (unsigned long long)source.image_width * source.image_height > work->max_pixels) {
        outcome = refuse(work, "more pixels than allowed");
        goto done;
    }
    state.work = work;
    state.errors = &errors;
    state.request_virt_barray = source.mem->request_virt_barray;
    source.mem->request_virt_barray = remember_array;
    state.progress.progress_monitor = rescale_while_reading;
    source.client_data = &state;
    source.progress = &state.progress;

    jvirt_barray_ptr *coefficients = jpeg_read_coefficients(&source);
    if (state.array_count != source.num_components) {
        outcome = refuse(work, "unexpected coefficient buffers");
        goto done;
    }
    if (state.rescaled_early && source.input_scan_number != 1) {
        /* A sequential file that revisited components in a later scan: blocks rescaled early
         * may have been written again. Rare and malformed; let the general path judge it. */
        outcome = refuse(work, "components appear in more than one scan");
        goto done;
    }
    for (int ci = 0; ci < source.num_components; ci++) {
        rescale_rows(&source, &state, ci, source.comp_info[ci].height_in_blocks);
    }

    target.err = &errors.pub;
    jpeg_create_compress(&target);
    target_created = 1;
    /* Half the quality rarely takes more than a quarter of the source's bytes; grown if not. */
    growing_destination destination = {
        .pub = {.init_destination = start_output,
                .empty_output_buffer = grow_output,
                .term_destination = finish_output},
        .work = work,
        .capacity = work->source_size / 4 + 16384,
    };
    work->output = malloc(destination.capacity);
    if (work->output == NULL) {
        ERREXIT1(&target, JERR_OUT_OF_MEMORY, 0);
    }
    target.dest = &destination.pub;
    /* Geometry, colour space and sampling factors from the source; jpeg_set_defaults inside:
     * standard Huffman tables, baseline sequential, a JFIF header. */
    jpeg_copy_critical_parameters(&source, &target);
    jpeg_add_quant_table(&target, 0, work->luminance, 100, TRUE);
    target.comp_info[0].quant_tbl_no = 0;
    if (target.num_components > 1) {
        jpeg_add_quant_table(&target, 1, work->chrominance, 100, TRUE);
        for (int ci = 1; ci < target.num_components; ci++) {
            target.comp_info[ci].quant_tbl_no = 1;
        }
    }
    /* Optimal Huffman tables cost a second pass over the coefficients (no more memory: they
     * are all held already) and change no coefficient. */
    target.optimize_coding = work->optimize_huffman ? TRUE : FALSE;
    if (work->progressive) {
        jpeg_simple_progression(&target);
    }
    jpeg_write_coefficients(&target, coefficients);
    if (work->icc_profile != NULL) {
        jpeg_write_icc_profile(&target, work->icc_profile, (unsigned int)work->icc_profile_size);
    }
    jpeg_finish_compress(&target);
    jpeg_finish_decompress(&source);

done:
    if (target_created) {
        jpeg_destroy_compress(&target);
    }
    if (source_created) {
        jpeg_destroy_decompress(&source);
    }
    if (outcome != REQUANTIZE_DONE) {
        free(work->output);
        work->output = NULL;
    }
    return outcome;
}

int requantize_libjpeg_version(void) { return JPEG_LIB_VERSION; }
