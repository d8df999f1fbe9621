"""mesh_discovery and upstream keepalive: a peer that leaves the DNS
answer loses its kept-alive connections from nginx within seconds (not at
keepalive_timeout's end), whether the workers get requests or not; a
request in flight to it finishes; peers that stay keep their
connections."""

import threading

import pytest
import requests

from harness import wait_for
from dns_util import Load, dns, host_backends  # noqa: F401 - fixtures
from test_upstream_discovery import IPS, conf, names, peers
from upstream_mesh_util import MODULES

# far beyond the bound the tests wait for: without the module closing
# them, cached connections would outlive every wait below
KEEPALIVE = ["keepalive 16", "keepalive_timeout 120s"]


def start(nginx, dns, port, ips, params="", workers=2):
    dns.set_hosts({"svc.test": ips}, reload=False)
    dns.start()
    return nginx.start(conf(["mesh_discovery svc.test port=%d resolver=%s%s"
                             % (port, dns.addr, params)], dns, *KEEPALIVE),
                       modules=MODULES, workers=workers, log_level="info")


@pytest.mark.parametrize("traffic", ["load", "idle"])
def test_removed_peer_loses_its_kept_alive_connections(nginx, dns,
                                                       host_backends,
                                                       traffic):
    """Under load (the workers sweep at their next request), and idle (a
    per-worker timer sweeps): the removed backend sees every connection
    from nginx closed within TTL + a few seconds, the kept one none."""
    bs = host_backends(IPS[:2])
    kept, gone = bs[IPS[0]], bs[IPS[1]]
    n = start(nginx, dns, kept.port, IPS[:2])
    wait_for(lambda: peers(n) == names(bs.values()), what="resolution")
    with Load(n.url("/"), threads=4) as load:
        wait_for(lambda: load.total >= 200, timeout=30, what="load")
        if traffic == "idle":
            load.stop_flag.set()
            for t in load.threads:
                t.join(10)
        assert gone.open_connections > 0 and kept.open_connections > 0
        kept_closed = kept.closed

        dns.set_hosts({"svc.test": IPS[:1]})
        wait_for(lambda: peers(n) == [kept.name], timeout=8, what="removal")
        wait_for(lambda: gone.open_connections == 0, timeout=8,
                 what="kept-alive connections of the removed peer closed")
        if traffic == "load":
            before = load.total
            wait_for(lambda: load.total >= before + 100, timeout=30,
                     what="load after the removal")
    assert load.failures == [], load.failures[:5]
    assert gone.open_connections == 0, "a removed peer got a new connection"
    if traffic == "idle":
        # nothing closed the connections of the peer that stays
        assert kept.closed == kept_closed and kept.open_connections > 0
    n.wait_log(r"\[info\].*mesh discovery: upstream \"svc\" closed \d+ "
               r"kept-alive connections to removed peers")


def test_slot_of_a_removed_peer_reused_under_load(nginx, dns,
                                                  host_backends):
    """max_peers=2, one address replaced by another: the new address takes
    the old one's slot; the old address's connections close, no request
    fails."""
    bs = host_backends(IPS[:3])
    old, new = bs[IPS[1]], bs[IPS[2]]
    n = start(nginx, dns, old.port, IPS[:2], " max_peers=2")
    # before the first answer the upstream has no peer and requests get
    # 502 (as documented): the load starts once both slots are filled
    wait_for(lambda: peers(n) == names([bs[IPS[0]], old]),
             what="resolution")
    with Load(n.url("/"), threads=4) as load:
        wait_for(lambda: load.total >= 200, timeout=30, what="load")
        assert old.open_connections > 0
        dns.set_hosts({"svc.test": [IPS[0], IPS[2]]})
        wait_for(lambda: peers(n) == names([bs[IPS[0]], new]), timeout=10,
                 what="replacement")
        wait_for(lambda: old.open_connections == 0, timeout=8,
                 what="connections to the replaced address closed")
        wait_for(lambda: load.snapshot().get(new.name, 0) > 0, timeout=10,
                 what="traffic to the new address")
    assert load.failures == [], load.failures[:5]


def test_request_in_flight_to_a_removed_peer(nginx, dns, host_backends):
    """A slow request is in flight on a peer when DNS removes it: it gets
    its 200 from that peer, new requests go to the other peer, and the
    connection it used is closed once it is over, not kept alive.  One
    worker: the load makes it sweep its cache before the slow request ends
    (with two, the load may all go to the other worker)."""
    bs = host_backends(IPS[:2])
    stay, gone = bs[IPS[0]], bs[IPS[1]]
    n = start(nginx, dns, stay.port, IPS[1:2], workers=1)
    wait_for(lambda: peers(n) == [gone.name], what="resolution")
    result = {}

    def slow():
        r = requests.get(n.url("/slow"), timeout=60)
        result["status"], result["body"] = r.status_code, r.text
    t = threading.Thread(target=slow)
    t.start()
    try:
        wait_for(lambda: gone.slow_started == 1, what="slow request")
        with Load(n.url("/"), threads=2) as load:
            dns.set_hosts({"svc.test": IPS[:1]})
            wait_for(lambda: peers(n) == [stay.name], timeout=8,
                     what="removal")
            wait_for(lambda: load.snapshot().get(stay.name, 0) > 20,
                     timeout=10, what="traffic to the other peer")
            # answers in flight at the change are counted by now
            before = load.snapshot().get(gone.name, 0)
            assert t.is_alive(), "the slow request ended before the removal"
            gone.release.set()
            t.join(30)
            assert result == {"status": 200, "body": gone.name}
            wait_for(lambda: gone.open_connections == 0, timeout=5,
                     what="the slow request's connection closed")
            assert load.snapshot().get(gone.name, 0) == before
    finally:
        gone.release.set()
        t.join(30)
    assert load.failures == [], load.failures[:5]
