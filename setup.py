"""Build of fastmlp's C core and its Cython bridge.

The extension fastmlp._core is compiled from src/fastmlp/_core.pyx and every csrc/*.c with
-O3 and OpenMP when the compiler has it (a plain single-threaded build otherwise). Instruction-set
specific kernels select their targets per function in the source (csrc/gemm*.c), so nothing here
uses -march=native and the wheel runs on any x86-64 (or other) CPU.

Environment switches:
  FASTMLP_SANITIZE=1  build with AddressSanitizer and UndefinedBehaviorSanitizer (tests only)
  FASTMLP_DEBUG=1     Cython bounds checks on, -O1 -g
  FASTMLP_NO_OPENMP=1 build without OpenMP even where the compiler has it
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup


def compiler_accepts(flags):
    """True if the C compiler builds and links an OpenMP program with these flags."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    src = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "t.c")
        with open(c, "w") as f:
            f.write(src)
        cmd = cc.split() + [c, "-o", os.path.join(tmp, "t")] + flags
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def flag_on(name):
    return os.environ.get(name, "") not in ("", "0")


sanitize = flag_on("FASTMLP_SANITIZE")
debug = flag_on("FASTMLP_DEBUG") or sanitize
cflags = ["-O1", "-g", "-fno-omit-frame-pointer"] if debug else ["-O3"]
# -fno-math-errno: the core never reads errno, and with it set GCC must call sqrtf for each
# value (to set errno on a negative one), which keeps Adam's update from vectorising (2.8 ns
# per value instead of 0.3 on the Zen 4 it was measured on). sqrt stays correctly rounded.
# -ffp-contract=off: the element-wise passes are cloned per ISA (csrc/optim.c note 8); without
# it GCC would fuse a * b + c into one FMA in the AVX clones only, and their results would
# differ in the last bit from the baseline clone's. The GEMM kernels call FMA explicitly.
cflags += ["-std=gnu11", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas"]
ldflags = []
if sys.platform != "win32" and not flag_on("FASTMLP_NO_OPENMP") and compiler_accepts(["-fopenmp"]):
    cflags.append("-fopenmp")
    ldflags.append("-fopenmp")
if sanitize:
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    cflags += san
    ldflags += san

ext = Extension(
    "fastmlp._core",
    sources=["src/fastmlp/_core.pyx"] + sorted(glob("csrc/*.c")),
    include_dirs=["csrc", np.get_include()],
    define_macros=[("FASTMLP_CFLAGS", '"%s"' % " ".join(cflags)),
                   ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
    depends=sorted(glob("csrc/*.h")),
)

directives = {"boundscheck": debug, "wraparound": False, "language_level": 3}
setup(ext_modules=cythonize([ext], compiler_directives=directives))
