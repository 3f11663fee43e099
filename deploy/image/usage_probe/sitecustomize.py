"""What a Python process really used, for the image diet (Dockerfile, deploy/image/usage.sh).

On PYTHONPATH, with MLDM_USAGE_OUT set to a folder, every process writes there at exit (and on
SIGUSR2, for a server that is still running) `<pid>.modules`: the file of every imported module,
and `<pid>.maps`: every file mapped into memory (/proc/self/maps: shared objects, whether
loaded by Python's import or by the dynamic linker as a dependency).
"""

import atexit
import os
import signal
import sys

_OUT = os.environ.get("MLDM_USAGE_OUT")


def _dump(*_: object) -> None:
    if not _OUT:
        return
    pid = os.getpid()
    modules = list(sys.modules.values())
    files = sorted({str(getattr(m, "__file__", None)) for m in modules} - {"None"})
    with open(os.path.join(_OUT, f"{pid}.modules"), "w") as f:
        f.write("\n".join(files) + "\n")
    with open("/proc/self/maps") as src, open(os.path.join(_OUT, f"{pid}.maps"), "w") as f:
        f.write("\n".join(sorted({line.split()[-1] for line in src if "/" in line})) + "\n")


if _OUT:
    atexit.register(_dump)
    signal.signal(signal.SIGUSR2, _dump)
