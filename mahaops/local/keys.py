"""The deploy SSH key of a local environment, generated once and kept outside the repo."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mahaops.secrets import env_dir


def deploy_key(env: str) -> Path:
    """Path of the env's private key (ed25519, 0600), generated on first use."""
    path = env_dir(env) / "id_ed25519"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        fd = os.open(path.with_suffix(".tmp"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
        os.replace(path.with_suffix(".tmp"), path)
        path.with_suffix(".pub").write_text(f"{public.decode()} maha-{env}\n")
    return path


def public_key(env: str) -> str:
    return deploy_key(env).with_suffix(".pub").read_text().strip()
