"""Settings for every host, every environment. Defaults and their meaning:
mahaops/settings/base.py. Overlays: local.py / aws.py, then one file per role group."""

base_timezone = "Etc/UTC"
base_deploy_user = "maha"  # deploys log in as this user, by key only
# People with sudo, keys only, e.g. [{"name": "ana", "public_keys": ["ssh-ed25519 AAAA... ana"]}]
base_admin_users: list[dict] = []
base_removed_users: list[str] = []  # former admins to remove everywhere
base_ssh_max_auth_tries = 3
base_journald_system_max_use = "500M"
base_unattended_upgrades = True
base_firewall = True
