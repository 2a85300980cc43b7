"""cni/fastjson.py answers exactly as json does: same objects, same text, same errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnetcni.cni import fastjson

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
documents = st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=30)


@settings(max_examples=400)
@given(documents, st.sampled_from([None, 0, 2, 4, "\t"]), st.booleans())
def test_dumps_is_json_dumps(doc, indent, sort_keys):
    assert fastjson.dumps(doc, indent=indent, sort_keys=sort_keys) == json.dumps(doc, indent=indent,
                                                                                 sort_keys=sort_keys)


@settings(max_examples=400)
@given(documents, st.sampled_from([None, 4]), st.text(" \t\n\r", max_size=3))
def test_loads_is_json_loads(doc, indent, space):
    text = space + json.dumps(doc, indent=indent) + space
    want = json.dumps(json.loads(text))  # NaN != NaN: compared as text
    assert json.dumps(fastjson.loads(text)) == want
    assert json.dumps(fastjson.loads(text.encode())) == want


def _outcome(fn, arg, **kw):
    try:
        return "ok", json.dumps(fn(arg, **kw))
    except Exception as exc:
        return type(exc), str(exc)


@settings(max_examples=400)
@given(st.text() | st.binary())
def test_anything_else_gets_json_answer_and_error(data):
    assert _outcome(fastjson.loads, data) == _outcome(json.loads, data)


@pytest.mark.parametrize("data", [b"", b"  ", b"{", b'{"a": 1} x', b'\xef\xbb\xbf{"a": 1}', '\ufeff{}',
                                  '{"a": 1}'.encode("utf-16"), b'{"a": "\xed\xa0\x80"}', b"[" * 100000,
                                  b'{"a": NaN}', b"\x00"])
def test_edge_inputs(data):
    assert _outcome(fastjson.loads, data) == _outcome(json.loads, data)


def test_parse_constant_is_honoured():
    def refuse(name):
        raise ValueError(f"{name} refused")

    with pytest.raises(ValueError, match="NaN refused"):
        fastjson.loads('{"a": NaN}', parse_constant=refuse)
    assert fastjson.loads('{"a": Infinity}', parse_constant=str) == {"a": "Infinity"}


def test_what_json_refuses_to_encode_is_refused_alike():
    circular: list = []
    circular.append(circular)
    for obj, err in (({"a": object()}, TypeError), (circular, ValueError), ({"a": {1, 2}}, TypeError)):
        with pytest.raises(err) as mine:
            fastjson.dumps(obj, indent=4)
        with pytest.raises(err) as theirs:
            json.dumps(obj, indent=4)
        assert str(mine.value) == str(theirs.value)
    assert fastjson.dumps({1: True, None: 2.5}, indent=4) == json.dumps({1: True, None: 2.5}, indent=4)


def test_loading_it_does_not_import_json():
    import subprocess
    import sys

    code = ("import sys; from vnetcni.cni import fastjson; fastjson.dumps(fastjson.loads('{\"a\": [1]}'), indent=4); "
            "print(' '.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split())
    assert not {"json", "re", "enum"} & loaded
