"""The local platform: real Debian hosts as Docker containers (systemd, sshd), no registry."""
