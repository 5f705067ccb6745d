"""Build the Cython core (native/) into tidelog._native.*; everything else is in pyproject.toml."""

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE_MODULES = ["checksum", "record_batch", "batch_scan", "partition_hash"]

extensions = [
    Extension(
        f"tidelog._native.{name}",
        [f"native/{name}.pyx"],
        include_dirs=["native", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for name in NATIVE_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["native"],
        compiler_directives={"language_level": "3", "embedsignature": True},
    ),
)
