"""Property tests of the contract: result conversion, config parsing, CNI_ARGS, plugin_config."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vnetcni.cni import dispatch, versions
from vnetcni.cni.config import ConfList, parse_conflist, parse_netconf
from vnetcni.cni.errors import CNIError, INVALID_ENV
from vnetcni.cni.invocation import Invocation, parse_cni_args, read_invocation
from vnetcni.cni.result import DNS, Interface, IPConfig, Result, Route, convert

# Kept small so the whole contract suite stays well under 20 s on 2 cores; CI runs each property
# on fresh random examples every time, so coverage accumulates across runs.
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESULTS = settings(FAST, max_examples=80)  # generating addresses is the slow part
VERSIONS = st.sampled_from(versions.SUPPORTED_VERSIONS)

# --- results ---------------------------------------------------------------------------------

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=15)
opt_str = st.one_of(st.just(""), st.text("abcdef0123456789:/._-", min_size=1, max_size=20))
opt_int = st.one_of(st.none(), st.integers(0, 2**31 - 1))


def cidr(version: int):
    bits = 32 if version == 4 else 128
    return st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(v=version), st.integers(0, bits))


def ip_configs(n_interfaces: int):
    index = st.none() if n_interfaces == 0 else st.one_of(st.none(), st.integers(0, n_interfaces - 1))

    def family(v: int):
        return st.builds(IPConfig, address=cidr(v),
                         gateway=st.one_of(st.just(""), st.ip_addresses(v=v).map(str)), interface=index)

    return st.one_of(family(4), family(6))


routes = st.builds(
    Route, dst=st.one_of(cidr(4), cidr(6)), gw=st.one_of(st.just(""), st.ip_addresses().map(str)),
    mtu=opt_int, advmss=opt_int, priority=opt_int, table=opt_int, scope=st.one_of(st.none(), st.integers(0, 255)))
interfaces = st.builds(Interface, name=names, mac=opt_str, sandbox=opt_str, mtu=opt_int,
                       socket_path=opt_str, pci_id=opt_str)
dns = st.builds(DNS, nameservers=st.lists(st.ip_addresses().map(str), max_size=3), domain=opt_str,
                search=st.lists(names, max_size=3), options=st.lists(names, max_size=3))


@st.composite
def results(draw) -> Result:
    ifaces = draw(st.lists(interfaces, max_size=3))
    return Result(interfaces=ifaces, ips=draw(st.lists(ip_configs(len(ifaces)), max_size=3)),
                  routes=draw(st.lists(routes, max_size=3)), dns=draw(dns))


def projection(result: Result, version: str) -> Result:
    """What `version` can carry of a 1.1.0 result: the 1.1.0-only fields are cleared below it."""
    if versions.at_least(version, "1.1.0"):
        return result
    return Result(
        interfaces=[Interface(i.name, i.mac, i.sandbox) for i in result.interfaces],
        ips=list(result.ips),
        routes=[Route(r.dst, r.gw) for r in result.routes],
        dns=result.dns,
    )


def over_the_wire(d: dict) -> dict:
    return json.loads(json.dumps(d))


@RESULTS
@given(results(), VERSIONS, VERSIONS)
def test_result_converts_between_any_two_versions(result, first, second):
    written = over_the_wire(result.to_dict(first))
    assert written["cniVersion"] == first
    carries_ip_version = not versions.at_least(first, "1.0.0")
    assert [ip.get("version") for ip in written["ips"]] == [
        ("6" if ":" in ip.address else "4") if carries_ip_version else None for ip in result.ips]
    assert Result.from_dict(written) == projection(result, first)
    lowest = min(first, second, key=versions.parse)
    assert convert(written, second) == projection(result, lowest).to_dict(second)
    # and back up to 1.1.0 loses nothing more than the lowest version on the way could carry
    assert Result.from_dict(convert(convert(written, second), "1.1.0")) == projection(result, lowest)


# --- configuration parsing never raises anything but CNIError -----------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
known_keys = st.sampled_from(["cniVersion", "cniVersions", "name", "type", "ipam", "dns", "runtimeConfig",
                              "prevResult", "capabilities", "args", "plugins", "disableCheck", "disableGC",
                              "cni.dev/valid-attachments", "interfaces", "ips", "routes"])
plausible = st.one_of(json_values, VERSIONS, st.sampled_from(["vnt-net", "vnet", "bad name", "1.0"]),
                      st.lists(VERSIONS, max_size=3))
configs = st.one_of(
    json_values,
    st.dictionaries(known_keys, plausible, max_size=10),
    st.builds(lambda base, extra: {**base, **extra},
              st.fixed_dictionaries({"cniVersion": VERSIONS, "name": st.just("vnt-net"), "type": st.just("t")}),
              st.dictionaries(known_keys, plausible, max_size=6)),
)


def only_cni_errors(call, *args) -> object:
    try:
        return call(*args)
    except CNIError as err:
        assert isinstance(err.code, int) and err.msg
        return None


class Everything(dispatch.Plugin):
    """Touches every accessor a real plugin would, so their errors are exercised too."""

    def add(self, inv, conf):
        conf.port_mappings()
        conf.previous_result()
        return Result()

    def delete(self, inv, conf):
        conf.port_mappings()

    def check(self, inv, conf):
        conf.previous_result()


@FAST
@given(configs)
def test_config_parsing_raises_only_cni_errors(obj):
    raw = json.dumps(obj).encode()
    conf = only_cni_errors(parse_netconf, raw)
    if conf is not None:
        only_cni_errors(conf.port_mappings)
        only_cni_errors(conf.previous_result)
    only_cni_errors(parse_conflist, raw)
    only_cni_errors(Result.from_dict, obj)


@FAST
@given(configs, st.sampled_from(["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"]))
def test_dispatch_always_answers_with_a_result_nothing_or_an_error_object(obj, verb):
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/vnt-p1",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
    out, code = dispatch.run(Everything(), env, json.dumps(obj).encode())
    if code:
        err = json.loads(out)
        assert set(err) <= {"cniVersion", "code", "msg", "details"} and err["code"] != 999, err
    else:
        assert out == b"" or isinstance(json.loads(out), dict)


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_cni_errors(data):
    only_cni_errors(parse_netconf, data)
    only_cni_errors(parse_conflist, data)


# --- CNI_ARGS ------------------------------------------------------------------------------

arg_keys = st.text(st.characters(blacklist_characters=";=", blacklist_categories=("Cs",)), min_size=1, max_size=12)
arg_values = st.text(st.characters(blacklist_characters=";", blacklist_categories=("Cs",)), max_size=12)


@FAST
@given(st.dictionaries(arg_keys, arg_values, max_size=6), st.randoms(use_true_random=False), st.booleans())
def test_cni_args_parse_in_any_order(args, rng, empty_segments):
    pairs = [f"{k}={v}" for k, v in args.items()]
    rng.shuffle(pairs)
    if empty_segments:
        pairs = ["", *pairs, ""]
    assert parse_cni_args(";".join(pairs)) == args


@FAST
@given(st.dictionaries(arg_keys, arg_values, max_size=4), arg_keys.filter(lambda s: "=" not in s))
def test_a_pair_without_equals_is_invalid_env(args, junk):
    raw = ";".join([*(f"{k}={v}" for k, v in args.items()), junk])
    try:
        parse_cni_args(raw)
    except CNIError as err:
        assert err.code == INVALID_ENV
    else:
        raise AssertionError(f"{raw!r} was accepted")


@FAST
@given(st.dictionaries(arg_keys, arg_values, max_size=4), st.sampled_from(["ADD", "CHECK", "DEL"]),
       st.lists(st.text("abc/_-", min_size=1, max_size=8), max_size=3))
def test_invocation_round_trips_through_its_environment(args, verb, path):
    inv = Invocation(verb, "c1", "/run/netns/vnt-p1", "eth0", args, tuple(path), b"{}")
    assert read_invocation(inv.to_env(), b"{}") == inv


# --- conflist plugin_config -----------------------------------------------------------------

capability = st.sampled_from(["portMappings", "bandwidth", "ips", "mac", "dns", "aliases"])


def case_variant(name: str):
    return st.sampled_from([name, name.lower(), name.upper(), name[0].upper() + name[1:]])


plugin_entries = st.fixed_dictionaries(
    {"type": st.sampled_from(["vnet", "portmap", "bandwidth"])},
    optional={"capabilities": st.dictionaries(capability, st.one_of(st.booleans(), st.just("true")), max_size=4),
              "runtimeConfig": st.just({"stale": True}), "bridge": st.just("azure0")},
)


@st.composite
def runtime_configs(draw) -> dict:
    chosen = draw(st.lists(capability, unique=True, max_size=5))
    return {draw(case_variant(c)): draw(json_values) for c in chosen}


@settings(FAST, max_examples=80)
@given(st.lists(plugin_entries, min_size=1, max_size=3), VERSIONS, runtime_configs(),
       st.one_of(st.none(), st.just({"cniVersion": "1.0.0", "ips": []})), st.data())
def test_plugin_config_injects_only_declared_capabilities(plugins, version, runtime, prev, data):
    snapshot = json.dumps(plugins, sort_keys=True)
    cl = parse_conflist({"cniVersion": version, "name": "vnt-net", "plugins": plugins})
    index = data.draw(st.integers(0, len(plugins) - 1))
    conf = cl.plugin_config(index, prev, runtime)
    assert conf["name"] == "vnt-net" and conf["cniVersion"] == version
    assert conf.get("prevResult") == prev and (("prevResult" in conf) == (prev is not None))
    declared = {c for c, on in plugins[index].get("capabilities", {}).items() if on is True}
    by_lower = {k.lower(): v for k, v in runtime.items()}
    expected = {c: by_lower[c.lower()] for c in declared if c.lower() in by_lower}
    assert conf.get("runtimeConfig") == (expected or None)
    untouched = {k: v for k, v in plugins[index].items() if k not in ("runtimeConfig",)}
    assert {k: conf[k] for k in untouched if k not in ("name", "cniVersion")} == {
        k: v for k, v in untouched.items() if k not in ("name", "cniVersion")}
    assert json.dumps(plugins, sort_keys=True) == snapshot  # the list itself is never modified
    assert isinstance(cl, ConfList)
