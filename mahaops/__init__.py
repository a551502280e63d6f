"""mahaops: the machinery behind the Maha platform's deploys.

Everything that is neither a pyinfra deploy (``deploys/``) nor a pyinfra
operation (``operations/``) lives here: typed settings, the secrets store,
the Docker test bed and local platform, the deploy runner, AWS provisioning
and the Ansible exporter.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: deploys/, group_data/, templates/ and inventories/ live here."""
