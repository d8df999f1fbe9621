"""The GCRA script of rate_limit_redis, run directly on Redis (a server
and a Redis Cluster node): each key is written first with the TAT it gets
if its old one is in the past, then fixed up.  What it leaves behind
(values, expiry times, types) must be what reading first left: a request
denied on any limit charges none, a key that had no TAT gets none, an
error undoes the batch."""

import os
import re

import pytest

from redis_modes_util import cluster  # noqa: F401

SOURCE = os.path.join(os.path.dirname(__file__), "..", "modules",
                      "rate_limit", "ngx_http_rate_limit_script.c")
S = 1000000                    # microseconds per second
INC, CAP = 10 * S, 25 * S      # cost 10 s, burst capacity 25 s
HINT = 128    # spec byte + 128: the worker saw the key limited


def script():
    src = open(SOURCE).read()
    body = re.search(r"ngx_http_rate_limit_lua = ngx_string\((.*?)\);",
                     src, re.S).group(1)
    text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    return text.encode().decode("unicode_escape")


class Node:
    """One Redis the script runs on, as the gateway calls it: all keys
    declared on a server; with Redis Cluster only the first, the keys
    after "c" and their number."""

    def __init__(self, client, cluster_mode):
        self.c = client
        self.cluster = cluster_mode
        self.sha = client.script_load(script())

    def run(self, *requests, specs=((INC, CAP),)):
        """requests: per request, its keys with the spec (1-based) of
        each: [("k", 1), ...].  Returns the results per request."""
        keys = [k for req in requests for k, _ in req]
        argv = [str(len(specs))]
        for inc, cap in specs:
            argv += [str(inc), str(cap)]
        argv += [bytes(s for _, s in req) for req in requests]
        if self.cluster:
            out = self.c.evalsha(self.sha, 1, keys[0], "c", len(keys),
                                 *keys, *argv)
        else:
            out = self.c.evalsha(self.sha, len(keys), *keys, *argv)
        assert len(out) == len(keys)       # one integer per limit
        res, i = [], 0
        for req in requests:
            res.append(out[i:i + len(req)])
            i += len(req)
        return res

    def now(self):
        s, us = self.c.time()
        return s * S + us

    def state(self, key):
        """What a key holds: its type, value and expiry time (ms)."""
        t = self.c.type(key).decode()
        v = self.c.get(key) if t == "string" else None
        return t, v, self.c.pexpiretime(key)

    def put_tat(self, key, tat):
        """A TAT as the script writes it, with its expiry."""
        self.c.set(key, "%d" % tat,
                   pxat=((tat + S - 1) // S + 1) * 1000)


@pytest.fixture(params=["server", "cluster"])
def node(request, redis):
    if request.param == "server":
        c = redis.client()
        c.flushall()
        return Node(c, False)
    cl = request.getfixturevalue("cluster")
    n = cl.node_of(KEY("a"))
    c = n.client()
    for k in c.keys("{t}*"):
        c.delete(k)
    return Node(c, True)


def KEY(name):
    """Keys of one slot (one hash tag), thus of one cluster node."""
    return "{t}" + name


def test_fresh_and_past_keys_take_the_guess(node):
    a, b = KEY("a"), KEY("b")
    node.put_tat(b, node.now() - 3 * S)
    before = node.now()
    assert node.run([(a, 1)], [(b, 1)]) == [[INC], [INC]]
    after = node.now()
    for k in (a, b):
        t, v, exp = node.state(k)
        assert t == "string" and before + INC <= int(v) <= after + INC
        assert exp == ((int(v) + S - 1) // S + 1) * 1000


def test_limited_key_admits_then_denies_exactly(node):
    a = KEY("a")
    tat = node.now() + 5 * S
    node.put_tat(a, tat)
    [[used]] = node.run([(a, 1)])
    # admitted: TAT moved on by the cost, expiry follows the TAT
    t, v, exp = node.state(a)
    assert int(v) == tat + INC
    assert exp == ((tat + INC + S - 1) // S + 1) * 1000
    assert INC + 4 * S < used <= INC + 5 * S
    # admitted again (15 s used, + 10 s fits the 25 s), then denied
    # (25 s used): value and expiry stay
    [[used]] = node.run([(a, 1)])
    assert used >= 0 and int(node.c.get(a)) == tat + 2 * INC
    before = node.state(a)
    [[res]] = node.run([(a, 1)])
    assert res < 0 and -1 - res > CAP - INC
    assert node.state(a) == before


def test_denied_on_a_second_limit_charges_none(node):
    a, b, fresh = KEY("a"), KEY("b"), KEY("fresh")
    node.put_tat(a, node.now() - 2 * S)          # past: the guess fits
    node.put_tat(b, node.now() + CAP)            # full
    before_a, before_b = node.state(a), node.state(b)
    [[ra, rf, rb]] = node.run([(a, 1), (fresh, 1), (b, 1)])
    assert ra == -1 and rf == -1 and rb < -1 - (CAP - INC)
    assert node.state(a) == before_a
    assert node.state(b) == before_b
    assert not node.c.exists(fresh)


def test_limited_first_limit_restored_when_second_denies(node):
    a, b = KEY("a"), KEY("b")
    node.put_tat(a, node.now() + 7 * S)          # in the future: fixed up
    node.put_tat(b, node.now() + CAP)
    before_a = node.state(a)
    [[ra, rb]] = node.run([(a, 1), (b, 1)])
    assert ra < -1 and rb < -1
    assert node.state(a) == before_a


def test_key_of_another_type(node):
    a, h, b = KEY("a"), KEY("h"), KEY("b")
    node.c.hset(h, "f", "v")
    node.put_tat(b, node.now() + CAP)
    # denied on b: the hash is left as it is
    [[rh, rb]] = node.run([(h, 1), (b, 1)])
    assert rh == -1 and rb < -1
    assert node.c.type(h) == b"hash" and node.c.hget(h, "f") == b"v"
    # admitted: taken as empty and overwritten; the batch's other
    # requests are charged as usual
    assert node.run([(a, 1)], [(h, 1)]) == [[INC], [INC]]
    t, v, exp = node.state(h)
    assert t == "string" and exp == ((int(v) + S - 1) // S + 1) * 1000


def test_value_that_is_no_tat(node):
    a, b = KEY("a"), KEY("b")
    node.put_tat(b, node.now() + CAP)
    for junk in ("abc", "9" * 16 + "x", "-5", "inf", "nan", "1e300",
                 "abcdefghijklmnop", "0" * 13 + "abc"):
        node.c.set(a, junk)
        [[ra, rb]] = node.run([(a, 1), (b, 1)])
        assert ra == -1 and rb < -1, junk
        assert not node.c.exists(a), junk          # denied: deleted
        node.c.set(a, junk)
        assert node.run([(a, 1)]) == [[INC]], junk  # taken as empty


def test_tat_of_another_length_is_compared_as_a_number(node):
    """A value of more digits than the clock's is a TAT all the same (in
    the far future: the key is full), whatever the strings' order."""
    a, fresh = KEY("a"), KEY("fresh")
    node.put_tat(a, 10 ** 16)               # 17 digits: the year 2286
    before = node.state(a)
    [[ra, rf]] = node.run([(a, 1), (fresh, 1)])
    assert ra < -1 - CAP and rf == -1
    assert node.state(a) == before and not node.c.exists(fresh)


def test_clock_with_few_microseconds(node):
    """Redis's clock as text is TIME's seconds and its microseconds padded
    to six digits: runs early in a second (4 and 5 digits of
    microseconds) write the same TATs as any other."""
    for i, (lo, hi) in enumerate(((1000, 6000), (20000, 80000),
                                  (300000, 900000))):
        for _ in range(30000):                  # 3 s at most
            before = node.now()
            if lo <= before % S < hi:
                break
        a = KEY("c%d" % i)
        assert node.run([(a, 1)], specs=((1, CAP),)) == [[1]]
        after = node.now()
        t, v, exp = node.state(a)
        assert before + 1 <= int(v) <= after + 1
        assert exp == ((int(v) + S - 1) // S + 1) * 1000


def test_large_batch(node):
    """More results, old values and specs than the script's tables are
    made with: 63 keys, three specs (the third takes more than the burst
    capacity: denied even on a fresh key)."""
    ks = [KEY("k%d" % i) for i in range(20)]
    xs = [KEY("x%d" % i) for i in range(20)]
    y = KEY("y")
    res = node.run(*[[(k, 1)] for k in ks],
                   *[[(k, 1), (x, 2)] for k, x in zip(ks, xs)],
                   [(ks[0], 1)], [(y, 2), (ks[1], 3)],
                   specs=((INC, CAP), (1, CAP), (CAP + 1, CAP)))
    assert res[:20] == [[INC]] * 20
    assert res[20:40] == [[2 * INC, 1]] * 20
    assert res[40:] == [[-1 - 2 * INC], [-1, -1 - 2 * INC]]
    assert not node.c.exists(y)
    tat = int(node.c.get(ks[0]))
    for k, x in zip(ks, xs):
        assert node.state(k) == ("string", b"%d" % tat,
                                 ((tat + S - 1) // S + 1) * 1000)
        assert int(node.c.get(x)) == tat - 2 * INC + 1


def test_same_key_twice_in_one_batch(node):
    """Each request sees the writes of those before it in the batch (one
    clock for the whole batch: exact figures)."""
    a, b = KEY("a"), KEY("b")
    res = node.run([(a, 1)], [(a, 1)], [(a, 1)], [(b, 1), (a, 1)],
                   [(a, 2)], specs=((INC, CAP), (1, CAP)))
    assert res[0] == [INC]                      # fresh: TAT now + 10 s
    assert res[1] == [2 * INC]                  # now + 20 s
    assert res[2] == [-1 - 2 * INC]             # 30 s > 25 s: denied
    assert res[3] == [-1, -1 - 2 * INC]         # denied on a: b uncharged
    assert res[4] == [2 * INC + 1]              # 1 us more fits
    assert not node.c.exists(b)
    t, v, exp = node.state(a)
    assert exp == ((int(v) + S - 1) // S + 1) * 1000


def test_an_error_undoes_the_batch(cluster):  # noqa: F811
    """A key of a slot this node does not serve (being migrated, say):
    the batch fails, and the keys written before it are as they were
    (those that had no TAT: gone)."""
    n = cluster.node_of(KEY("a"))
    other = next("{o%d}x" % i for i in range(1000)
                 if cluster.node_of("{o%d}x" % i).port != n.port)
    node = Node(n.client(), True)
    a, fresh, h = KEY("a"), KEY("fresh"), KEY("h")
    for k in (a, fresh, h):
        node.c.delete(k)
    node.put_tat(a, node.now() + 3 * S)
    node.c.hset(h, "f", "v")
    before = node.state(a)
    with pytest.raises(Exception) as e:
        node.run([(a, 1)], [(fresh, 1), (h, 1)], [(other, 1)])
    assert "local" in str(e.value)
    assert node.state(a) == before
    assert not node.c.exists(fresh)
    # overwritten (charged) before the error: it cannot come back, and
    # is left uncharged, deleted (a key of another type is taken as empty)
    assert not node.c.exists(h)


def test_an_error_undoes_a_large_batch(cluster):  # noqa: F811
    """The undo goes back over every write of the batch, more than the
    script's tables are made with, hinted keys charged included."""
    n = cluster.node_of(KEY("a"))
    other = next("{o%d}x" % i for i in range(1000)
                 if cluster.node_of("{o%d}x" % i).port != n.port)
    node = Node(n.client(), True)
    for k in node.c.keys("{t}*"):
        node.c.delete(k)
    a = KEY("a")
    node.put_tat(a, node.now() + 3 * S)
    before = node.state(a)
    fresh = [KEY("f%d" % i) for i in range(40)]
    with pytest.raises(Exception) as e:
        node.run(*[[(k, 1 + (i % 3 == 0) * HINT)]
                   for i, k in enumerate(fresh)],
                 [(a, 1)], [(KEY("g"), 1), (other, 1)])
    assert "local" in str(e.value)
    assert node.state(a) == before
    assert node.c.keys("{t}*") == [a.encode()]


def test_needs_no_more_than_the_documented_acl(redis):
    """Everything the script does, as a user allowed what the README asks
    for (redis_secure_util.GW_ACL): restores and deletions included."""
    import redis as redis_py
    from redis_secure_util import GW_ACL
    admin = redis.client()
    admin.flushall()
    admin.execute_command("ACL", "SETUSER", "rlscript", "reset", "on",
                          ">pw", *GW_ACL.split())
    try:
        c = redis_py.Redis(port=redis.port, username="rlscript",
                           password="pw")
        node = Node(admin, False)          # loads the script, looks
        user = Node.__new__(Node)           # the user only runs it
        user.c, user.cluster, user.sha = c, False, node.sha
        a, b, h = "rl:a", "rl:b", "rl:h"
        admin.hset(h, "f", "v")
        admin.set(a, "junk")
        node.put_tat(b, node.now() + CAP)
        before = node.state(b)
        [[ra, rf, rh, rb]] = user.run([(a, 1), ("rl:f", 1), (h, 1), (b, 1)])
        assert ra == rf == rh == -1 and rb < -1
        assert not admin.exists(a) and not admin.exists("rl:f")
        assert admin.type(h) == b"hash" and node.state(b) == before
        node.put_tat(b, node.now() + 3 * S)
        before = node.state(b)
        [[rb, ra]] = user.run([(b, 1), (a, 1)], specs=((CAP, CAP),))
        assert rb < -1 and ra == -1 and node.state(b) == before
        assert user.run([(a, 1)], [(h, 1)]) == [[INC], [INC]]
        c.close()
    finally:
        admin.execute_command("ACL", "DELUSER", "rlscript")


def sets(node):
    st = node.c.info("commandstats")
    return st.get("cmdstat_set", {}).get("calls", 0)


def test_hinted_key_is_read_first_and_denied_without_a_write(node):
    a, b = KEY("a"), KEY("b")
    node.put_tat(a, node.now() + CAP)
    before = node.state(a)
    n = sets(node)
    [[ra]] = node.run([(a, 1 + HINT)])
    assert ra < -1 - (CAP - INC) and node.state(a) == before
    assert sets(node) == n                     # GET only
    # denied on a hinted limit: the other (guessed) key is restored
    [[rb, ra]] = node.run([(b, 1), (a, 1 + HINT)])
    assert rb == -1 and ra < -1 and not node.c.exists(b)
    assert node.state(a) == before


def test_hinted_key_admitted_is_written(node):
    """A stale hint (the key has room again, or is gone): read, then
    written as without the hint."""
    a, fresh, h = KEY("a"), KEY("fresh"), KEY("h")
    tat = node.now() + 3 * S
    node.put_tat(a, tat)
    node.c.hset(h, "f", "v")
    res = node.run([(a, 1 + HINT)], [(fresh, 1 + HINT)], [(h, 1 + HINT)])
    assert res[1] == [INC] and res[2] == [INC]
    assert int(node.c.get(a)) == tat + INC
    for k in (a, fresh, h):
        t, v, exp = node.state(k)
        assert t == "string" and exp == ((int(v) + S - 1) // S + 1) * 1000


@pytest.mark.parametrize("mode", ["server", "cluster"])
def test_gateway_hints_limited_keys(nginx, redis, mode, request):
    """Through the gateway: once a key was denied, the worker's next checks
    of it read first, and a flood of denied requests writes nothing."""
    import requests
    if mode == "server":
        c = redis.client()
        c.flushall()
        nodes, where = [c], "server=127.0.0.1:%d" % redis.port
    else:
        cl = request.getfixturevalue("cluster")
        nodes = [n.client() for n in cl.nodes]
        where = "cluster=" + cl.seeds
    n = nginx.start("""
    rate_limit_redis %s timeout=2s;
    rate_limit_zone z key=$arg_k rate=1r/m burst=1;
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "ok\\n"; }
    }
    server {
        listen 127.0.0.1:{{port}};
        location / { rate_limit z; proxy_pass http://127.0.0.1:{{port1}}; }
    }""" % where, modules=["rate_limit"])
    k = "hint-%s-%d" % (mode, os.getpid())
    codes = [requests.get(n.url("/?k=" + k), timeout=10).status_code
             for _ in range(3)]
    assert codes == [200, 200, 429]

    def set_calls():
        return sum(x.info("commandstats").get("cmdstat_set", {})
                   .get("calls", 0) for x in nodes)
    before = set_calls()
    codes = [requests.get(n.url("/?k=" + k), timeout=10).status_code
             for _ in range(5)]
    assert codes == [429] * 5
    assert set_calls() == before
