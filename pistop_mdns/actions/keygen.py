"""`pistop-mdns keygen [PATH]`: write a new pre-shared key (mode 0600).

The same file goes to every board and the server; with it, clients act only
on servers that prove they know it, and remote commands are accepted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import TextIO

from pistop_mdns import auth


def run(path: str, *, force: bool, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if os.path.exists(path) and not force:
        err.write(f"pistop-mdns: error: {path} exists; fix: keep it (copy it to the other hosts) "
                  f"or replace it with --force (then copy the new one everywhere)\n")
        return 1
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key.")
        try:
            # mkstemp creates the file 0600: the key is never readable by others.
            with os.fdopen(fd, "w") as f:
                f.write(auth.generate_key() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        err.write(f"pistop-mdns: error: cannot write {path}: {e.strerror}; fix: run as root or choose "
                  f"another path\n")
        return 1
    out.write(f"wrote a new key to {path} (mode 600)\n"
              f"copy it to the server and every board, to the same path, e.g.:\n"
              f"  scp -p {path} root@kitchen:{path}\n"
              f"then restart pistop-mdns there; without the same key a host is ignored.\n")
    return 0
