import json

from vnetcni.cni import dispatch
from vnetcni.cni.result import Result, IPConfig, Interface, Route


class Echo:
    def add(self, inv, conf):
        return Result(interfaces=[Interface("eth0", "aa:bb:cc:dd:ee:ff", inv.netns)],
                      ips=[IPConfig("10.240.0.36/16", "10.240.0.1", 0)],
                      routes=[Route("0.0.0.0/0", "10.240.0.1")])

    def delete(self, inv, conf):
        return None


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0"}


def test_add_answers_in_requested_version():
    conf = {"cniVersion": "0.3.1", "name": "n", "type": "echo"}
    out, code = dispatch.run(Echo(), ENV, json.dumps(conf).encode())
    assert code == 0
    res = json.loads(out)
    assert res["cniVersion"] == "0.3.1" and res["ips"][0]["version"] == "4"


def test_invalid_json_is_decode_error():
    out, code = dispatch.run(Echo(), ENV, b"{nope")
    assert code == 1 and json.loads(out)["code"] == 6
