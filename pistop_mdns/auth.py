"""The optional pre-shared key: loading it and MACs made with it.

Only the standard library's `hmac` (HMAC-SHA256) and `secrets` are used; the
key authenticates TXT records, the channel handshake and stop notices.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from hashlib import sha256

from pistop_mdns.config import ConfigError

MIN_KEY_CHARS = 16


def generate_key() -> str:
    """A new key: 32 random bytes as 64 hex digits (one line, easy to copy)."""
    return secrets.token_hex(32)


def load_key(path: str, *, required: bool) -> bytes | None:
    """The key in `path`, or None when it does not exist and was not asked for."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            text = f.read().strip()
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"{path}: key file not found; fix: run `pistop-mdns keygen {path}` on the "
                f"server and copy the file to every board, or unset general.key_file"
            ) from None
        return None
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read the key: {e.strerror}; fix: run as root or check its permissions"
        ) from None
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(
            f"{path}: key is shorter than {MIN_KEY_CHARS} characters; "
            f"fix: write a new one with `pistop-mdns keygen {path}`"
        )
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: key file is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"fix: chmod 600 {path}"
        )
    return text


def configured_key(cfg) -> bytes | None:
    """The key of general.key_file: optional at its default path, required when set."""
    path = cfg.general.key_file
    return load_key(path, required=cfg.sources[("general", "key_file")] != "default")


def mac(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 over the parts, each length-prefixed so no two inputs collide."""
    h = hmac.new(key, digestmod=sha256)
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()


def verify(key: bytes, given: object, *parts: str) -> bool:
    """Whether `given` (anything a peer sent) is the MAC of the parts."""
    if not isinstance(given, str) or len(given) != 64 or not given.isascii():
        return False
    return hmac.compare_digest(mac(key, *parts), given)
