"""File operations the project needs beyond pyinfra's own."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO
from typing import Any

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Sha1File
from pyinfra.operations.util.files import chmod, chown, generate_color_diff

from mahaops.pyinfra_hooks import staging
from mahaops.templating import render


@operation()
def validated_template(
    src: str,
    dest: str,
    validate: str,
    user: str = "root",
    group: str = "root",
    mode: str = "644",
    **data: Any,
):
    """
    Render a template and put it in place only after a command accepts it, so a bad
    setting can never reach a service that would refuse to start (or lock us out).

    + src: template name under templates/ (e.g. ``base/sshd_config.j2``)
    + dest: remote path of the file
    + validate: command checking the candidate; ``%s`` is replaced by its path
    + user: owner of the file
    + group: group of the file
    + mode: permissions of the file
    + data: template variables

    The candidate is written beside ``dest`` (same filesystem, so the final move is
    atomic) and removed when the check fails. Maps to Ansible's ``template`` with
    ``validate``.

    **Example:**

    .. code:: python

        validated_template(
            name="Configure sshd",
            src="base/sshd_config.j2",
            dest="/etc/ssh/sshd_config",
            validate="/usr/sbin/sshd -t -f %s",
            mode="600",
            base_ssh_port=22,
        )
    """
    if "%s" not in validate:
        raise ValueError("validate must contain %s, the candidate file's path")
    content = render(src, **data)
    wanted_sha1 = hashlib.sha1(content.encode()).hexdigest()
    remote = host.get_fact(File, path=dest)
    remote_sha1 = host.get_fact(Sha1File, path=dest) if remote else None

    if remote and remote_sha1 == wanted_sha1:
        changed = False
        if (remote.get("user"), remote.get("group")) != (user, group):
            changed = True
            yield chown(dest, user, group)
        if int(remote.get("mode") or 0) != int(mode):
            changed = True
            yield chmod(dest, mode)
        if not changed:
            host.noop(f"{dest} is up to date")
        return

    if state.config.DIFF:
        current = host.get_fact(FileContents, path=dest) if remote else None
        current_lines = [line + "\n" for line in current or []]
        host.log(f"Will {'modify' if remote else 'create'} {dest}", logger.info)
        for line in generate_color_diff(current_lines, content.splitlines(keepends=True)):
            logger.info("  %s", line)
        logger.info("")

    candidate = f"{dest}.maha-new"
    q_candidate, q_dest = shlex.quote(candidate), shlex.quote(dest)
    # Staging: a restart recorded as owed before this change goes after the check, so a
    # refused candidate leaves no restart owed (as the Ansible export's validate does).
    yield staging(
        FileUploadCommand(
            StringIO(content), candidate, remote_temp_filename=host.get_temp_filename(candidate)
        )
    )
    yield staging(chown(candidate, user, group))
    yield staging(chmod(candidate, mode))
    check = validate.replace("%s", q_candidate)
    yield staging(StringCommand(f"{check} || {{ rm -f {q_candidate}; exit 1; }}"))
    yield StringCommand(f"mv -f {q_candidate} {q_dest}")


@operation()
def command_once(command: str, creates: str):
    """
    Run a command once: only while the file it creates does not exist yet.

    + command: the command to run (as root with the deploy's sudo)
    + creates: path the command creates; its presence means the work is done

    For state that a service on the host owns after the first run (so the deploy must
    not keep rewriting it). Maps to Ansible's ``command`` with ``creates``.

    **Example:**

    .. code:: python

        command_once(
            name="Tag log lines with the current release",
            command="/usr/local/sbin/maha-log-release",
            creates="/var/lib/maha-log/release.json",
        )
    """
    if host.get_fact(File, path=creates):
        host.noop(f"{creates} exists")
        return
    yield StringCommand(command)
