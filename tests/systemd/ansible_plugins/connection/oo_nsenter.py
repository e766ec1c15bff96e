"""Ansible connection plugin of the tests: run tasks inside a booted nspawn container.

No connection plugin that ships with ansible-core enters a container, and the
one that would fit (community.docker.nsenter) comes only with the full
``ansible`` bundle, so the tests carry this small one: every command runs as
``nsenter --target PID --all --root --wd -- /bin/sh -c CMD`` (the way
tests/systemd/nspawn.py's Container.exec enters a container), files travel
through the command's standard input and output.  A PID that is gone makes
the host UNREACHABLE, like a refused ssh connection.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

DOCUMENTATION = """
name: oo_nsenter
short_description: run tasks inside the container whose PID 1 is ansible_oo_nsenter_pid
description:
  - Enters every namespace and the root of the target process with nsenter, as root.
options:
  pid:
    description: The host PID of the container's PID 1.
    type: int
    required: true
    vars:
      - name: ansible_oo_nsenter_pid
"""

CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
}


class Connection(ConnectionBase):  # type: ignore[misc]
    transport = "oo_nsenter"
    has_pipelining = True

    def _pid(self) -> int:
        return int(self.get_option("pid"))

    def _connect(self) -> Connection:
        pid = self._pid()
        if not os.path.exists(f"/proc/{pid}/ns/mnt"):
            raise AnsibleConnectionFailure(
                f"no process {pid} to enter: the container is not running"
            )
        self._connected = True
        return self

    def _run(self, script: str, stdin: bytes | None) -> tuple[int, bytes, bytes]:
        self._connect()
        argv = ["nsenter", f"--target={self._pid()}", "--all", "--root", "--wd", "--"]
        try:
            done = subprocess.run(
                [*argv, "/bin/sh", "-c", script],
                input=stdin if stdin is not None else b"",
                capture_output=True,
                env=CONTAINER_ENV,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AnsibleConnectionFailure(f"{script[:60]!r}: no answer after 600 s") from exc
        if done.returncode != 0 and b"nsenter:" in done.stderr[:200]:
            raise AnsibleConnectionFailure(done.stderr.decode(errors="replace").strip())
        return done.returncode, done.stdout, done.stderr

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = True
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._run(cmd, in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as fh:
            data = fh.read()
        rc, _, err = self._run(f"cat > {shlex.quote(out_path)}", data)
        if rc != 0:
            raise AnsibleError(f"writing {out_path} failed: {err.decode(errors='replace')}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        rc, out, err = self._run(f"cat {shlex.quote(in_path)}", None)
        if rc != 0:
            raise AnsibleError(f"reading {in_path} failed: {err.decode(errors='replace')}")
        with open(out_path, "wb") as fh:
            fh.write(out)

    def close(self) -> None:
        self._connected = False

    def reset(self) -> None:
        self.close()
