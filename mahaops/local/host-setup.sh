#!/bin/sh
# Turns a Debian root filesystem into a test-bed host: systemd as PID 1, sshd, sudo,
# python3 and a deploy user let in by key only. Runs inside a chroot or a container.
# Arguments: DEPLOY_USER
set -eu
user="$1"

# sshd makes its host keys at first boot, so no two hosts share them.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/10-host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
ln -sf /lib/systemd/system/ssh.service /etc/systemd/system/multi-user.target.wants/ssh.service

# Units that make no sense in a container only add noise to `systemctl --failed`.
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-modules-load.service \
            sys-kernel-config.mount sys-kernel-debug.mount proc-sys-fs-binfmt_misc.mount \
            systemd-firstboot.service; do
    ln -sf /dev/null "/etc/systemd/system/$unit"
done

# The deploy user: key only (no password), passwordless sudo.
if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --groups sudo "$user"
fi
passwd -l "$user" >/dev/null
install -d -m 700 -o "$user" -g "$user" "/home/$user/.ssh"
echo "$user ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/90-$user"
chmod 440 "/etc/sudoers.d/90-$user"

# systemd decides the machine id at boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
