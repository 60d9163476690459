/*
 * Python's view of jpeg_requantize (requantize.c does the work): arguments checked and
 * copied into a job, the GIL released while libjpeg runs, refusals raised as Unsuitable.
 * Built against Python's limited API (abi3), so that one binary serves 3.11 and later.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>

#include "requantize.h"

static PyObject *Unsuitable;
static PyObject *TooManyScans;

static int read_table(PyObject *sequence, unsigned int *table, const char *name) {
    /* Plain sequence calls, not PySequence_Fast: the module keeps to the limited API (abi3),
       so that one wheel serves every Python from 3.11 on. */
    Py_ssize_t size = PySequence_Size(sequence);
    if (size < 0) {
        return -1;
    }
    if (size != REQUANTIZE_TABLE_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "the %s table must have 64 entries", name);
        return -1;
    }
    for (Py_ssize_t k = 0; k < REQUANTIZE_TABLE_ENTRIES; k++) {
        PyObject *item = PySequence_GetItem(sequence, k);
        if (item == NULL) {
            return -1;
        }
        long value = PyLong_AsLong(item);
        Py_DECREF(item);
        if (value == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (value < 1 || value > 255) {
            PyErr_Format(PyExc_ValueError, "%s table entries must be within 1..255", name);
            return -1;
        }
        table[k] = (unsigned int)value;
    }
    return 0;
}

static PyObject *requantize(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"data",        "luminance",        "chrominance",
                               "icc_profile", "optimize_huffman", "progressive",
                               "max_scans",   "max_pixels",       NULL};
    Py_buffer data, icc = {0};
    PyObject *luminance, *chrominance, *icc_object = Py_None;
    int optimize_huffman = 0, progressive = 0, max_scans = 0;
    Py_ssize_t max_pixels = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*OO|O$ppin", keywords, &data, &luminance,
                                     &chrominance, &icc_object, &optimize_huffman,
                                     &progressive, &max_scans, &max_pixels)) {
        return NULL;
    }
    PyObject *result = NULL;
    requantize_job *work = calloc(1, sizeof(requantize_job));
    if (work == NULL) {
        PyErr_NoMemory();
        goto out;
    }
    if (max_scans < 0 || max_pixels < 0) {
        PyErr_SetString(PyExc_ValueError, "max_scans and max_pixels must be 0 (no limit) or more");
        goto out;
    }
    if (read_table(luminance, work->luminance, "luminance") < 0 ||
        read_table(chrominance, work->chrominance, "chrominance") < 0) {
        goto out;
    }
    if (icc_object != Py_None) {
        if (PyObject_GetBuffer(icc_object, &icc, PyBUF_SIMPLE) < 0) {
            goto out;
        }
        work->icc_profile = icc.buf;
        work->icc_profile_size = (size_t)icc.len;
    }
    work->source = data.buf;
    work->source_size = (size_t)data.len;
    work->optimize_huffman = optimize_huffman;
    work->progressive = progressive;
    work->max_scans = max_scans;
    work->max_pixels = (unsigned long long)max_pixels;

    enum requantize_outcome outcome;
    /* The buffers stay pinned by their Py_buffer views; other threads may run meanwhile. */
    Py_BEGIN_ALLOW_THREADS outcome = requantize_transcode(work);
    Py_END_ALLOW_THREADS

    switch (outcome) {
    case REQUANTIZE_DONE:
        result = PyBytes_FromStringAndSize((const char *)work->output,
                                           (Py_ssize_t)work->output_size);
        free(work->output);
        break;
    case REQUANTIZE_TOO_MANY_SCANS:
        PyErr_SetString(TooManyScans, work->message);
        break;
    default:
        PyErr_SetString(Unsuitable, work->message);
    }

out:
    if (icc.obj != NULL) {
        PyBuffer_Release(&icc);
    }
    PyBuffer_Release(&data);
    free(work);
    return result;
}

static PyMethodDef methods[] = {
    {"requantize", (PyCFunction)(void (*)(void))requantize, METH_VARARGS | METH_KEYWORDS,
     "requantize(data, luminance, chrominance, icc_profile=None, *, optimize_huffman=False,"
     " progressive=False, max_scans=0, max_pixels=0) -> bytes\n\n"
     "Rewrite the JPEG `data` with the given quantization tables (64 entries each, natural "
     "order), rescaling its DCT coefficients without decoding pixels. Raises Unsuitable for "
     "what it does not handle (CMYK, 12-bit, arithmetic coding, unusual sampling) and for any "
     "libjpeg error or warning, and TooManyScans (an Unsuitable) once a file has more than "
     "`max_scans` scans (0: no limit). A frame of more than `max_pixels` pixels (0: no limit) "
     "is Unsuitable before anything is allocated for it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "jpeg_requantize._native", NULL, -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) {
        return NULL;
    }
    Unsuitable = PyErr_NewExceptionWithDoc(
        "jpeg_requantize._native.Unsuitable",
        "This JPEG cannot be re-quantized here; decode it the general way.", PyExc_ValueError,
        NULL);
    if (Unsuitable == NULL || PyModule_AddObjectRef(created, "Unsuitable", Unsuitable) < 0) {
        Py_XDECREF(Unsuitable);
        Py_DECREF(created);
        return NULL;
    }
    TooManyScans = PyErr_NewExceptionWithDoc(
        "jpeg_requantize._native.TooManyScans",
        "The JPEG has more scans than the caller allowed; it was not decoded further.",
        Unsuitable, NULL);
    if (TooManyScans == NULL ||
        PyModule_AddObjectRef(created, "TooManyScans", TooManyScans) < 0) {
        Py_XDECREF(TooManyScans);
        Py_DECREF(created);
        return NULL;
    }
    PyModule_AddIntConstant(created, "LIBJPEG_VERSION", requantize_libjpeg_version());
    return created;
}
