"""json.loads / json.dumps for the plugin's start-up path, without importing `json`.

Importing `json` imports `re` (and with it `enum`, the regex compiler and four compiled
patterns): ~5 ms of every plugin run without vnetd, for a few hundred bytes of configuration.
The parsing and the encoding are done by json's own C accelerators (`_json`, the code
json.loads/json.dumps run), only the thin Python layer around them is here:

- loads: the same objects as json.loads for every document it accepts; anything the fast path
  does not take (invalid JSON, another encoding, a byte-order mark) goes to json.loads itself, so
  errors and their messages are json's, word for word.
- dumps: the same text as json.dumps (default separators; `indent` laid out as json lays it
  out; `sort_keys`); anything else (another type, a circular reference) goes to json.dumps.

The unit tests compare both with json on generated documents (tests/unit/test_fastjson.py).
"""

from __future__ import annotations

try:
    import _json
except ImportError:  # an interpreter without the accelerators: json itself
    _json = None

_WS = " \t\n\r"


def _json_module():
    import json

    return json


class _Context:
    """What the C scanner reads from a JSONDecoder (its defaults)."""

    __slots__ = ("strict", "object_hook", "object_pairs_hook", "parse_float", "parse_int", "parse_constant")

    def __init__(self, parse_constant) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = parse_constant


_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
_scanners: dict = {}


def _scanner(parse_constant):
    scan = _scanners.get(parse_constant)
    if scan is None:
        scan = _scanners[parse_constant] = _json.make_scanner(_Context(parse_constant or _CONSTANTS.__getitem__))
    return scan


def loads(s: str | bytes | bytearray, *, parse_constant=None):
    """json.loads(s, parse_constant=parse_constant)."""
    if _json is not None:
        try:
            text = s.decode("utf-8") if isinstance(s, (bytes, bytearray)) else s
            start = len(text) - len(text.lstrip(_WS))
            obj, end = _scanner(parse_constant)(text, start)
            if not text[end:].strip(_WS):
                return obj
        except Exception:  # json.loads decides, and words the error
            pass
    if parse_constant is None:
        return _json_module().loads(s)
    return _json_module().loads(s, parse_constant=parse_constant)


def load(f):
    """json.load(f)."""
    return loads(f.read())


def _no_default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _compact(o, sort_keys: bool) -> str:
    if isinstance(o, str):
        return _json.encode_basestring_ascii(o)
    # A fresh encoder each time: its circular-reference markers are left behind by a failure.
    encode = _json.make_encoder({}, _no_default, _json.encode_basestring_ascii, None, ": ", ", ", sort_keys,
                                False, True)
    return "".join(encode(o, 0))


class _Unsupported(Exception):
    pass


def _indented(o, pad: str, step: str, sort_keys: bool, out: list) -> None:
    """json's layout with an indent (item separator ',' and key separator ': ')."""
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = pad + step
        items = o.items()
        if sort_keys:
            items = sorted(items)
        sep = "{" + inner
        for k, v in items:
            if not isinstance(k, str):
                raise _Unsupported  # json turns other keys into strings: let it
            out.append(sep)
            out.append(_json.encode_basestring_ascii(k))
            out.append(": ")
            _indented(v, inner, step, sort_keys, out)
            sep = "," + inner
        out.append(pad + "}")
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        inner = pad + step
        sep = "[" + inner
        for v in o:
            out.append(sep)
            _indented(v, inner, step, sort_keys, out)
            sep = "," + inner
        out.append(pad + "]")
    elif isinstance(o, (str, int, float)) or o is None:  # bool is an int
        out.append(_compact(o, sort_keys))
    else:
        raise _Unsupported


def dumps(obj, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """json.dumps(obj, indent=indent, sort_keys=sort_keys)."""
    if _json is not None:
        try:
            if indent is None:
                return _compact(obj, sort_keys)
            out: list[str] = []
            _indented(obj, "\n", " " * indent if isinstance(indent, int) else indent, sort_keys, out)
            return "".join(out)
        except Exception:  # json.dumps decides, and words the error
            pass
    return _json_module().dumps(obj, indent=indent, sort_keys=sort_keys)
