"""The C part of jpeg_requantize, linked against the system libjpeg-turbo (libjpeg62-turbo-dev).

Built against the limited API of Python 3.11 (abi3): one binary serves 3.11 and every later
Python, which is what a wheel staged for Cloud Functions (3.11 or 3.12 runtimes) needs.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jpeg_requantize._native",
            sources=["jpeg_requantize/_native.c", "jpeg_requantize/requantize.c"],
            depends=["jpeg_requantize/requantize.h"],
            libraries=["jpeg"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
            py_limited_api=True,
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
