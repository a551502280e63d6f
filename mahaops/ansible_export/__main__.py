"""``python -m mahaops.ansible_export --env NAME --out DIR``: record the deploys, write the
Ansible project. A process of its own, like the deploy runner: pyinfra needs gevent's
monkey patching before anything else is imported."""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402
import sys

from mahaops.ansible_export.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
