"""The one compiled part of edgefn: wasm_runtime/_hostcall.c (see wasm_runtime/_crossing.py).

Everything else is declared in pyproject.toml; setuptools reads extension modules from here.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wasm_runtime._hostcall",
            ["wasm_runtime/_hostcall.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
