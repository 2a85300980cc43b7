"""NodeLayout, and the C front door following the same rule (the parity test)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vnetcni.cni.errors import CNIError
from vnetcni.cni.invocation import decode_json_object
from vnetcni.daemon.protocol import timeout_ms
from vnetcni.node.layout import DEFAULT_STATE_DIR, LayoutError, NodeLayout
from vnetcni.plugins.install import compile_front_door


def test_the_c_defaults_come_from_the_python_constants():
    from vnetcni.plugins.install import front_door_defines

    defines = front_door_defines("vnet", None)
    assert f'-DDEFAULT_STATE_DIR="{DEFAULT_STATE_DIR}"' in defines
    assert f"-DDEFAULT_TIMEOUT_MS={timeout_ms(NodeLayout().vnetd_timeout)}" in defines
    assert not any(d.startswith("-DFALLBACK") for d in defines)


def test_one_default_and_every_file_under_the_state_dir():
    lay = NodeLayout()
    assert lay.state_dir == DEFAULT_STATE_DIR
    assert lay.socket == f"{DEFAULT_STATE_DIR}/vnetd.sock"
    assert lay.ipam_file == f"{DEFAULT_STATE_DIR}/ipam.json"
    assert lay.endpoints_file == f"{DEFAULT_STATE_DIR}/endpoints.json"
    assert lay.lock_dir == f"{DEFAULT_STATE_DIR}/locks"
    assert lay.pending_deletes == f"{DEFAULT_STATE_DIR}/pending-deletes"
    assert NodeLayout("/s//x/./y/../").state_dir == "/s/x"


@pytest.mark.parametrize("plugin,config,state_dir", [
    ("vnet", {"stateDir": "/a"}, "/a"),
    ("vnet", {"ipam": {"stateDir": "/b"}}, "/b"),
    ("vnet", {"stateDir": "/a", "ipam": {"stateDir": "/b"}}, "/a"),
    ("vnet-ipam", {"stateDir": "/a", "ipam": {"stateDir": "/b"}}, "/b"),
    ("vnet-ipam", {"stateDir": "/a"}, "/a"),
    ("vnet", {"stateDir": None, "ipam": {"stateDir": "/b"}}, "/b"),
    ("vnet", {}, DEFAULT_STATE_DIR),
    ("vnet", {"ipam": "nope"}, DEFAULT_STATE_DIR),
])
def test_the_rule(plugin, config, state_dir):
    assert NodeLayout.for_plugin(plugin, config).state_dir == state_dir


@pytest.mark.parametrize("config", [{"stateDir": 3}, {"stateDir": "rel"}, {"stateDir": ""},
                                    {"ipam": {"stateDir": ["/x"]}}, {"stateDir": "/a\0b"}, []])
def test_bad_state_dirs_are_refused(config):
    with pytest.raises(LayoutError):
        NodeLayout.for_plugin("vnet", config)


def test_from_conflist_finds_the_vnet_plugin(tmp_path):
    conflist = {"name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}},
                                         {"type": "vnet", "stateDir": "/v", "ipam": {"stateDir": "/i"}}]}
    assert NodeLayout.from_conflist(conflist).state_dir == "/v"
    under_bridge = {"name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "vnet-ipam", "stateDir": "/i"}}]}
    assert NodeLayout.from_conflist(under_bridge).state_dir == "/i"
    path = tmp_path / "10-vnet.conflist"
    path.write_text(json.dumps(conflist))
    assert NodeLayout.from_conflist_file(str(path)).socket == "/v/vnetd.sock"
    path.write_text("{")
    with pytest.raises(LayoutError):
        NodeLayout.from_conflist_file(str(path))


# --- parity with the C front door ---------------------------------------------------------------

@pytest.fixture(scope="module")
def front_doors(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("a C compiler is needed: scripts/setup.sh installs one")
    out = tmp_path_factory.mktemp("doors")
    doors = {}
    for plugin in ("vnet", "vnet-ipam"):
        doors[plugin] = out / plugin
        compile_front_door(plugin, "/nonexistent", doors[plugin], cc)
    return doors


def c_socket(door, raw: bytes) -> str | None:
    proc = subprocess.run([str(door), "--socket-path"], input=raw, capture_output=True, timeout=10)
    text = proc.stdout.decode("utf-8", "surrogateescape").rstrip("\n")
    return text if proc.returncode == 0 else None


def py_socket(plugin: str, raw: bytes) -> str | None:
    """What a front door of `plugin` uses for this configuration: "<socket> <timeout ms>"."""
    try:
        layout = NodeLayout.for_plugin(plugin, decode_json_object(raw))
    except (LayoutError, CNIError):
        return None
    return f"{layout.socket} {timeout_ms(layout.vnetd_timeout)}"


TRICKY = [
    "/a", "/a/", "//a", "///a", "/a/./b", "/a/../../b", "/", "//", "/..", "/a//b/", "rel", "", "./a",
    "/caf\u00e9", "/\U0001F600", "/a\\b", '/a"b', "/a\nb", "/a\0b", "/\ud800", "/" + "x" * 3999,
    "/" + "x" * 4000, "/" + "\u00e9" * 2000,
]
values = st.one_of(st.sampled_from(TRICKY), st.none(), st.integers(), st.booleans(),
                   st.lists(st.just("/x"), max_size=1), st.text(min_size=0, max_size=12).map(lambda t: "/" + t))
timeouts = st.one_of(st.none(), st.booleans(), st.just("5"), st.integers(-2, 100),
                     st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=100),
                     st.sampled_from([0, 0.0001, 0.0005, 0.0015, 60, 60.0, 60.0000001, 1e-300, 10**30, -0.0]))
sections = st.fixed_dictionaries({}, optional={"stateDir": values, "vnetdTimeoutSeconds": timeouts,
                                               "other": st.integers()})


@pytest.mark.parametrize("plugin", ["vnet", "vnet-ipam"])
@pytest.mark.parametrize("raw", [
    b'{"stateDir": "/a", "stateDir": "/b"}', b'{"stateDir": "/a", "stateDir": null}',
    b'{"ipam": {"stateDir": "/i"}, "ipam": 3}', b'{"stat\\u0065Dir": "\\/esc\\/aped"}',
    b'{"ipam": {"type": "vnet-ipam", "stateDir": "\\ud83d\\ude00"}}', b'[]', b'{', b'',
    b'{"x": "\\ud800", "stateDir": "/ok"}', b'{"stateDir": "/a"} x', b' {"stateDir" : "/s" } \n',
    b'{"a": [1, {"stateDir": "/deep"}], "b": {"ipam": {"stateDir": "/no"}}}',
    b'{"stateDir": "/\xed\xa0\x80"}', b'\xef\xbb\xbf{}', b'{"n": NaN}', b'{"n": -0.5e+3, "t": true}',
    b'{"n": 01}', b'{"n": tru}', b'{"stateDir": "/\xc0\xaf"}', b'{"a": [], "b": {}, "c": [ ]}',
    b'{"vnetdTimeoutSeconds": 1e400}', b'{"vnetdTimeoutSeconds": 0.5e-0}',
    b'{"vnetdTimeoutSeconds": 2, "ipam": {"vnetdTimeoutSeconds": 3}}',
    b'{"vnetdTimeoutSeconds": null, "ipam": {"vnetdTimeoutSeconds": 3}}', b'{"vnetdTimeoutSeconds": "1"}',
    b'{"vnetdTimeoutSeconds": 0.' + b'0' * 100 + b'1}', b'{"vnetdTimeoutSeconds": -0}',
])
def test_c_front_door_agrees_on_raw_documents(front_doors, plugin, raw):
    assert c_socket(front_doors[plugin], raw) == py_socket(plugin, raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plugin=st.sampled_from(["vnet", "vnet-ipam"]), top=sections,
       ipam=st.one_of(st.none(), sections, st.just("str")), ascii_only=st.booleans())
def test_c_front_door_agrees_with_node_layout(front_doors, plugin, top, ipam, ascii_only):
    conf = {"cniVersion": "1.0.0", "name": "n", "type": plugin, **top}
    if ipam is not None:
        conf["ipam"] = ipam
    raw = json.dumps(conf, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert c_socket(front_doors[plugin], raw) == py_socket(plugin, raw)
