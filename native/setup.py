"""The C part of jpeg_requantize, linked against the system libjpeg-turbo (libjpeg62-turbo-dev)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jpeg_requantize._native",
            sources=["jpeg_requantize/_native.c"],
            libraries=["jpeg"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit"],
        )
    ]
)
