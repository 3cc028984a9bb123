"""``import cupy`` gives the strict stand-in in any process started with this folder on PYTHONPATH.

    PYTHONPATH=tests/strict_cupy/shim python -m minidni.run copy --backend cupy ...

(notebook kernels, Ray workers and command-line subprocesses alike). With
``STRICT_CUPY_SYNCS=FILE`` the process writes its host syncs there as JSON when it exits.
"""

import atexit
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, where strict_cupy lives
import strict_cupy  # noqa: E402

sys.modules.update({"cupy": strict_cupy.module, "cupy.cuda": strict_cupy.module.cuda,
                    "cupy.cuda.runtime": strict_cupy.module.cuda.runtime})
if os.environ.get("STRICT_CUPY_SYNCS"):
    atexit.register(lambda: Path(os.environ["STRICT_CUPY_SYNCS"]).write_text(
        json.dumps([e._asdict() for e in strict_cupy.SYNCS.events])))
