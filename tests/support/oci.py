"""Tiny OCI images written by hand (one uncompressed layer, an image config, a manifest, an
index) as an oci-archive that `ctr images import` loads: the sandbox's pause image FROM scratch
from a static C binary, and a busybox image for the pods' workload containers."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
    for (;;) pause();
}
"""

BUSYBOX_APPLETS = ("sh", "ping", "ip", "cat", "echo", "sleep", "timeout", "wget", "httpd", "nc", "ls", "true",
                   "grep", "kill", "ps", "hostname", "env", "test")


def _blob(blobs: dict[str, bytes], data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest, len(data)


def _layer(files: dict[str, bytes | str], dirs: tuple[str, ...]) -> bytes:
    """files: path -> bytes (a regular file, mode 0755) or str (a symlink target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.mode, info.size = 0o755, len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_archive(archive: Path, name: str, files: dict[str, bytes | str], entrypoint: list[str],
                  dirs: tuple[str, ...] = ()) -> Path:
    """One-layer image `name` (e.g. localhost/vnt-pause:1) as an oci-archive at `archive`."""
    blobs: dict[str, bytes] = {}
    layer = _layer(files, dirs)
    layer_digest, layer_size = _blob(blobs, layer)
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]},
              "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    config_digest, config_size = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": layer_digest, "size": layer_size}]}
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size, "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}]}
    entries = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
               "index.json": json.dumps(index).encode()}
    entries.update({f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()})
    with tarfile.open(archive, "w") as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive


def pause_archive(workdir: Path, name: str) -> Path:
    """The sandbox image: a statically linked pause (gcc -static), nothing else."""
    src, binary = workdir / "pause.c", workdir / "pause"
    src.write_text(PAUSE_C)
    subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(src)], check=True,
                   capture_output=True, timeout=120)
    return write_archive(workdir / "pause.tar", name, {"pause": binary.read_bytes()}, ["/pause"])


def busybox_archive(workdir: Path, name: str) -> Path:
    """A workload image: busybox-static and its applet links."""
    files: dict[str, bytes | str] = {"bin/busybox": Path(shutil.which("busybox") or "/bin/busybox").read_bytes()}
    files.update({f"bin/{a}": "busybox" for a in BUSYBOX_APPLETS})
    return write_archive(workdir / "busybox.tar", name, files, ["/bin/sh"], dirs=("bin", "tmp", "etc", "proc", "sys", "dev"))
