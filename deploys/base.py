"""Base role, on every host: packages through the apt proxy, admin users, hardened sshd,
time, unattended security upgrades, journald, kernel hardening and a default-deny firewall.

Read top to bottom, it is the runbook for a fresh Debian 12 host.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, python, server, systemd

from deploys._common import reloaded, restart, template
from deploys.log_shipping import log_shipping
from mahaops import firewall
from mahaops.context import addresses, host_roles, settings
from mahaops.settings.base import BaseSettings
from operations import apt
from operations.changes import changed
from operations.facts import IsContainer, Users
from operations.files import validated_template
from operations.sshd import admits as sshd_admits
from operations.sshd import effective as sshd_applies

PACKAGES = [
    "netbase",
    "sudo",
    "openssh-server",
    "chrony",
    "unattended-upgrades",
    "nftables",
    "rsyslog",
]


def template_vars(s: BaseSettings) -> dict[str, Any]:
    """Variables the base templates see: the settings plus what follows from the inventory."""
    openings = firewall.declared(host_roles(), host.data.dict())
    groups = {source for o in openings for source in o.sources}
    rules = firewall.rules(
        openings, s.base_admin_cidrs, {group: addresses(group) for group in groups}
    )
    return {
        **s.model_dump(),
        "base_sudo_users": [s.base_deploy_user] + [u.name for u in s.base_admin_users if u.sudo],
        "base_ssh_allow_groups": [s.base_ssh_group],
        "base_firewall_rules": [rule.__dict__ for rule in rules],
    }


def sshd_expected(s: BaseSettings) -> dict[str, str]:
    """What ``sshd -T`` must print for the settings that keep intruders out."""
    yes_no = {True: "yes", False: "no"}
    return {
        "port": str(s.base_ssh_port),
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "permitemptypasswords": "no",
        "authenticationmethods": "publickey",
        "maxauthtries": str(s.base_ssh_max_auth_tries),
        "allowgroups": s.base_ssh_group,
        "allowtcpforwarding": yes_no[s.base_ssh_allow_tcp_forwarding],
        "allowagentforwarding": yes_no[s.base_ssh_allow_agent_forwarding],
        "permituserenvironment": "no",
        "x11forwarding": "no",
    }


@deploy("Base")
def base() -> None:
    s = settings(BaseSettings)
    tvars = template_vars(s)
    in_container = host.get_fact(IsContainer)
    # First contact: logged in as an image's own user (``admin`` on Debian's AMIs), whom
    # the hardened sshd below no longer admits. The deploy user must be able to log in
    # with the operator's key before sshd is reloaded, or every later run is locked out.
    login = host.data.get("ssh_user")
    first_contact = bool(login) and login != s.base_deploy_user
    if first_contact and not s.base_deploy_user_keys:
        raise ValueError(
            f"{host.name}: logged in as {login!r}, whom sshd will refuse after this run, and"
            f" base_deploy_user_keys is empty: {s.base_deploy_user!r} would have no key"
        )

    # -- packages ---------------------------------------------------------------------------
    if s.apt_proxy:
        template(
            "Send apt through the package cache",
            "base/apt-proxy.conf.j2",
            "/etc/apt/apt.conf.d/01maha-proxy",
            **tvars,
        )
    else:
        files.file(
            name="Fetch packages directly (no apt proxy)",
            path="/etc/apt/apt.conf.d/01maha-proxy",
            present=False,
        )
    template(
        "Bound every apt fetch",
        "base/apt-bounds.conf.j2",
        "/etc/apt/apt.conf.d/02maha-bounds",
        **tvars,
    )
    apt.packages(
        name="Install base packages",
        packages=sorted({*PACKAGES, *s.base_packages}),
        update=True,
        cache_time=3600,
        no_recommends=True,
    )

    # -- identity: hostname and time zone ---------------------------------------------------
    server.hostname(name="Set the hostname", hostname=host.name)
    files.link(
        name="Set the time zone",
        path="/etc/localtime",
        target=f"/usr/share/zoneinfo/{s.base_timezone}",
    )
    template(
        "Record the time zone",
        "base/timezone.j2",
        "/etc/timezone",
        **tvars,
    )

    # -- people: the deploy user and admins, keys only --------------------------------------
    server.group(name="Create the SSH login group", group=s.base_ssh_group)
    deploy_user = server.user(
        name=f"Deploy user {s.base_deploy_user}",
        user=s.base_deploy_user,
        shell="/bin/bash",
        groups=["sudo", s.base_ssh_group],
        append=True,
        create_home=True,
        public_keys=s.base_deploy_user_keys or None,  # added to the keys it has
    )
    for admin in s.base_admin_users:
        server.user(
            name=f"Admin {admin.name}",
            user=admin.name,
            shell="/bin/bash",
            groups=[s.base_ssh_group, *(["sudo"] if admin.sudo else [])],
            public_keys=admin.public_keys,
            delete_keys=True,
            create_home=True,
        )
    existing = host.get_fact(Users)
    for gone in s.base_removed_users:
        if gone in existing:
            server.user(name=f"Remove former admin {gone}", user=gone, present=False)
    validated_template(
        name="Allow sudo for admins",
        src="base/sudoers.j2",
        dest="/etc/sudoers.d/90-maha",
        validate="/usr/sbin/visudo -cqf %s",
        mode="440",
        **tvars,
    )

    # -- sshd, checked before it is used ----------------------------------------------------
    sshd = validated_template(
        name="Harden sshd",
        src="base/sshd_config.j2",
        dest="/etc/ssh/sshd_config",
        validate="/usr/sbin/sshd -t -f %s",
        mode="600",
        **tvars,
    )
    # Before the reload: with the configuration on disk, sshd admits the deploy user with
    # the operator's key (where the key is ours to manage: AWS, first contact or not).
    if s.base_deploy_user_keys and (first_contact or changed(sshd) or changed(deploy_user)):
        sshd_admits(
            name=f"sshd admits {s.base_deploy_user} with its key (sshd -T -C)",
            user=s.base_deploy_user,
            keys=s.base_deploy_user_keys,
        )
    reloaded("Reload sshd for the new configuration", "ssh", when=[sshd])
    sshd_applies(
        name="sshd applies the hardened settings (sshd -T)",
        expected=sshd_expected(s),
        # A plan cannot judge a configuration not written yet; the run checks it.
        pending=host.state.should_check_for_changes() and bool(sshd.will_change),
    )
    if first_contact and host.data.get("instance_id"):
        from mahaops.aws.inventory import record_handover

        python.call(
            name=f"Hand the instance over to {s.base_deploy_user} (EC2 tag)",
            function=record_handover,
            env=host.data.get("aws_env"),
            instance_id=host.data.get("instance_id"),
            user=s.base_deploy_user,
        )

    # -- time ------------------------------------------------------------------------------
    chrony = template(
        "Configure time sync (chrony)",
        "base/chrony.conf.j2",
        "/etc/chrony/chrony.conf",
        **tvars,
    )
    if not in_container:  # a container's clock is its host's: chrony cannot discipline it
        systemd.service(name="Run chrony", service="chrony", running=True, enabled=True)
        restart("Restart chrony for the new configuration", "chrony", when=[chrony])

    # -- security updates ------------------------------------------------------------------
    template(
        "Schedule unattended security upgrades",
        "base/20auto-upgrades.j2",
        "/etc/apt/apt.conf.d/20auto-upgrades",
        **tvars,
    )
    template(
        "Configure unattended upgrades",
        "base/52maha-unattended-upgrades.j2",
        "/etc/apt/apt.conf.d/52maha-unattended-upgrades",
        **tvars,
    )

    # -- journald --------------------------------------------------------------------------
    files.directory(name="journald drop-in directory", path="/etc/systemd/journald.conf.d")
    journald = template(
        "Limit the journal",
        "base/journald.conf.j2",
        "/etc/systemd/journald.conf.d/90-maha.conf",
        **tvars,
    )
    restart("Restart journald for the new limits", "systemd-journald", when=[journald])

    # -- kernel ----------------------------------------------------------------------------
    if s.base_sysctl_hardening and not in_container:  # a container shares its host's kernel
        sysctl = template(
            "Harden kernel settings",
            "base/sysctl-hardening.conf.j2",
            "/etc/sysctl.d/90-maha-hardening.conf",
            **tvars,
        )
        server.shell(
            name="Apply kernel settings",
            commands=["sysctl --system"],
            _if=sysctl.did_change,
        )

    # -- firewall --------------------------------------------------------------------------
    if s.base_firewall:
        rules = validated_template(
            name="Firewall: open only declared ports",
            src="base/nftables.conf.j2",
            dest="/etc/nftables.conf",
            validate="/usr/sbin/nft -c -f %s",
            mode="755",
            **tvars,
        )
        systemd.service(name="Run the firewall", service="nftables", running=True, enabled=True)
        reloaded("Load the new firewall rules", "nftables", when=[rules])

    log_shipping()
