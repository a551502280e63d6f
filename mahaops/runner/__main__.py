"""``python -m mahaops.runner``: the deploy runner's process.

The only module of the runner with side effects on import, in this order: gevent's
monkey patching (pyinfra's parallelism needs it before anything else is imported), then
stdout and stderr masked (``mahaops.masking``) before anything can print.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402
import sys
from typing import TextIO, cast

from mahaops import masking

sys.stdout = cast(TextIO, masking.MaskingStream(cast(TextIO, sys.__stdout__)))
sys.stderr = cast(TextIO, masking.MaskingStream(cast(TextIO, sys.__stderr__)))

from mahaops.runner.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
