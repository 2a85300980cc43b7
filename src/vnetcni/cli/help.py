"""Help text in the usual Unix style: option values named TEXT/INTEGER/SECONDS..., flags without
a type. Typer >= 0.20 prints `<str>`/`<bool>` in that column; we print what click always did."""

from __future__ import annotations

_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "Path": "PATH"}


def plain_help() -> None:
    try:
        from typer import core
    except ImportError:  # pragma: no cover
        return
    base = getattr(core, "_TyperParameter", None)
    if base is None or getattr(base, "_vnetctl_plain", False) or not hasattr(base, "display_type"):
        return
    original = base.display_type

    def display_type(self, ctx):
        if getattr(self, "is_flag", False) or getattr(self, "is_bool_flag", False):
            return None
        label = original(self, ctx)
        if label is None:
            return None
        inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
        if inner.startswith("list[") and inner.endswith("]"):
            element = inner[5:-1]
            return ("[" + element + "]..." if "|" in element else _NAMES.get(element, element.upper()) + "...")
        if "|" in inner:
            return f"[{inner}]"
        return _NAMES.get(inner, inner.upper())

    base.display_type = display_type
    base._vnetctl_plain = True
    arg = getattr(core, "TyperArgument", None)
    if arg is not None and hasattr(arg, "_usage_display_name"):
        def usage_name(self) -> str:
            name = self.display_name_raw.upper()
            name = name if self.required else f"[{name}]"
            return name + ("..." if self.nargs != 1 else "")

        arg._usage_display_name = usage_name
        if hasattr(arg, "_rich_display_name"):
            arg._rich_display_name = lambda self: self.display_name_raw.upper() + ("..." if self.nargs != 1 else "")


def plain_usage_errors() -> None:
    """Usage errors (unknown option, bad value) in vnetctl's one error style, exit code 2:
    `error: …` and `hint: see `vnetctl CMD --help``, instead of a framed box."""
    try:
        from typer import rich_utils
    except ImportError:  # pragma: no cover
        return
    if getattr(rich_utils, "_vnetctl_plain", False):
        return

    def rich_format_error(self) -> None:
        import sys

        ctx = getattr(self, "ctx", None)
        print(f"error: {self.format_message()}", file=sys.stderr)
        if ctx is not None:
            print(f"hint: see `{ctx.command_path} --help`", file=sys.stderr)

    rich_utils.rich_format_error = rich_format_error
    rich_utils._vnetctl_plain = True
