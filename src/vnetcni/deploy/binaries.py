"""install-cni: copy the image's statically linked front doors into the host's CNI bin directory.

That is all the DaemonSet's init container does: no conflist (vnetd writes it once it serves), no
compiler, no Python on the host. Each copy is atomic and skipped when the host already holds the
same bytes, so a restart or an upgrade to the same binaries changes nothing on the node."""

from __future__ import annotations

from pathlib import Path

from ..plugins.front import PLUGINS
from .files import place, require_dir

IMAGE_CNI_BIN = "/opt/vnet-cni/cni-bin"  # where the image ships the front doors


def install_binaries(source_dir: str, bin_dir: str, create_dirs: bool = False) -> list[tuple[str, str]]:
    """[(host path, installed|updated|unchanged)] for each plugin."""
    src, dest = Path(source_dir), Path(bin_dir)
    missing = [name for name in PLUGINS if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} has no {', '.join(missing)} (is this the vnet-cni image?)")
    require_dir(dest, create_dirs, "CNI bin directory")
    done = []
    for name in PLUGINS:
        target = dest / name
        done.append((str(target), place(target, (src / name).read_bytes(), 0o755)))
    return done
