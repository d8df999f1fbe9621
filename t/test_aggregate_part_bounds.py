"""ngx_http_aggregate_module: memory bounded by the part size,
parts' JSON checked and merged as canonical text, field variables that
are absent or hold control bytes."""

import json
import os
import re
import sys

import pytest
import requests

from harness import Resp, require_module
from aggregate_util import conf

require_module("aggregate")

MOD = ["aggregate"]


def get(n, path, **kw):
    kw.setdefault("timeout", 30)
    return requests.get(n.url(path), **kw)


def vm(pid, field):
    """A /proc/<pid>/status figure (VmHWM, VmRSS) in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


MIB = 1024 * 1024


def fill(unit, first="", size=MIB - 64):
    """A JSON array (or object, with first="{") of `unit` repeated up to
    size bytes."""
    n = (size - 2) // (len(unit) + 1)
    if first == "{":
        body = "{" + ",".join(unit % i for i in range(n)) + "}"
        while len(body) > size:
            n = n * 9 // 10
            body = "{" + ",".join(unit % i for i in range(n)) + "}"
        return body.encode()
    return ("[" + ",".join([unit] * n) + "]").encode()


SHAPES = {
    # values that cost a JSON tree 20 to 70 times their text
    "arrays": (fill("[]"), ""),
    "objects": (fill("{}"), ""),
    "numbers": (fill("0"), ""),
    "strings": (fill('""'), ""),
    # member names checked for duplicates, members merged flat
    "members": (fill('"%x":0', "{"), "aggregate_merge flat;"),
    # fields= over an array of objects
    "fields": (fill('{"id":1,"x":[]}'), "FIELDS"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_memory_stays_proportional_to_the_part_size(nginx, backend, shape):
    """Three parts just under the default aggregate_max_part_size (1 MiB)
    once took a worker from a few MB to 153 MB (jansson trees of
    "[[],[],...]"): the peak RSS a request adds stays within a few times
    the parts' bytes."""
    body, extra = SHAPES[shape]
    assert len(body) < MIB
    fields = " fields=id" if extra == "FIELDS" else ""
    extra = "" if extra == "FIELDS" else extra
    b = backend()
    for p in ("a", "b", "c"):
        b.script("/" + p, [Resp(200, body)])
    b.json("/small", [[], {}])
    n = nginx.start(conf("""
        location = /big {
            aggregate a /_svc/a%s;
            aggregate b /_svc/b%s;
            aggregate c /_svc/c%s;
            %s
        }
        location = /small {
            aggregate a /_svc/small;
            aggregate b /_svc/small;
            aggregate c /_svc/small;
            %s
        }
    """ % (fields, fields, fields, extra, extra)), modules=MOD,
        bport=b.port, rport=1, workers=1)
    pid = n.worker_pids()[0]
    assert get(n, "/small").status_code == 200
    before = vm(pid, "VmHWM")
    r = get(n, "/big")
    assert r.status_code == 200, r.text[:200]
    assert r.headers["Aggregate-Completed"] == "true"
    grown = vm(pid, "VmHWM") - before
    total = 3 * len(body)
    # the parts' buffers, the answer, and slack for nginx and the allocator
    # (AddressSanitizer's redzones and quarantine make RSS meaningless)
    assert os.environ.get("MESHGATE_ASAN") or grown < 5 * total, \
        "one request grew the worker by %.1f MB for %.1f MB of parts" % (
            grown / MIB, total / MIB)
    doc = r.json()
    if shape == "members":
        assert len(doc) == len(json.loads(body))
    elif shape == "fields":
        assert doc["a"][:2] == [{"id": 1}, {"id": 1}]
        assert len(doc["a"]) == len(json.loads(body))
    else:
        assert doc["a"] == json.loads(body)
    assert pid in n.worker_pids()


# -- what the merged answer holds -------------------------------------------

CANON = (b'{ "a" : "\\u0041\\/\\u00e9\\ud83d\\ude00" ,\r\n\t"n": '
         b'12345678901234567890, "f": 1.50, "e": -0E+2, "t": true,'
         b' "z": null, "nl": "x\\ny\\u001f\\u007f\\"\\\\", "o": {}, '
         b'"l": [ ], "u": "\xc3\xa9" }')
CANON_OUT = (b'{"a":"A/\xc3\xa9\xf0\x9f\x98\x80","n":12345678901234567890,'
             b'"f":1.50,"e":-0E+2,"t":true,"z":null,'
             b'"nl":"x\\ny\\u001F\x7f\\"\\\\","o":{},"l":[],'
             b'"u":"\xc3\xa9"}')

VALID = {
    "canon": (CANON, CANON_OUT),
    "bom": (b"\xef\xbb\xbf [1]", b"[1]"),
    "scalar": (b' "s" ', b'"s"'),
    "zero": (b"-0.0e-0", b"-0.0e-0"),
    "null": (b"null", b"null"),
    "deep": (b"[" * 2048 + b"]" * 2048, b"[" * 2048 + b"]" * 2048),
}

INVALID = {
    "dup": b'{"a":1,"b":2,"a":3}',
    "dup_escaped": b'{"a":1,"\\u0061":2}',
    "dup_nested": b'[{"x":{"k":1,"k":2}}]',
    "lone_high": b'"\\ud800"',
    "lone_low": b'"\\udc00x"',
    "nul_escape": b'"a\\u0000b"',
    "raw_control": b'"a\nb"',
    "bad_escape": b'"\\x41"',
    "short_u": b'"\\u12"',
    "overlong": b'"\xc0\xaf"',
    "utf8_surrogate": b'"\xed\xa0\x80"',
    "too_deep": b"[" * 2049 + b"]" * 2049,
    "trailing": b"{} x",
    "two_values": b"1 2",
    "leading_zero": b"01",
    "dot_end": b"1.",
    "minus": b"-",
    "dot_start": b".5",
    "plus": b"+1",
    "exp_end": b"1e+",
    "tru": b"tru",
    "comma_array": b"[1,]",
    "comma_object": b'{"a":1,}',
    "no_colon": b'{"a" 1}',
    "name_number": b"{1:2}",
    "open": b"[",
    "unterminated": b'"abc',
    "mismatch": b"[}",
    "spaces": b"  ",
}


def parts_conf(names):
    return "\n".join("aggregate %s /_svc/%s optional;" % (p, p)
                     for p in names)


def test_parts_are_checked_and_merged_as_canonical_text(nginx, backend):
    """Parts are validated as jansson validated them (duplicates, escapes,
    UTF-8, nesting), and copied to the answer compact, with strings in
    one canonical form and numbers as they were written."""
    b = backend()
    names = sorted(VALID) + sorted(INVALID)
    for p, (body, _) in VALID.items():
        b.script("/" + p, [Resp(200, body)])
    for p, body in INVALID.items():
        b.script("/" + p, [Resp(200, body)])
    n = nginx.start(conf("""
        location = /v {
            %s
            aggregate_timeout 20s;
        }
    """ % parts_conf(names)), modules=MOD, bport=b.port, rport=1)
    r = get(n, "/v")
    assert r.status_code == 200
    raw = r.content
    for p, (_, out) in VALID.items():
        assert b'"%s":%s' % (p.encode(), out) in raw, p
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        doc = json.loads(raw)
    finally:
        sys.setrecursionlimit(limit)
    assert doc["canon"]["n"] == 12345678901234567890
    assert doc["canon"]["nl"] == 'x\ny\x1f\x7f"\\'
    assert doc["_errors"] == {p: "invalid_json" for p in INVALID}
    for p in INVALID:
        assert doc[p] is None
    log = n.logs()
    for p in INVALID:
        assert re.search(r'\[warn\].*aggregate part "%s": invalid JSON at '
                         r'offset \d+: ' % p, log), p
    assert int(r.headers["Content-Length"]) == len(raw)


def test_fields_over_canonical_names(nginx, backend):
    b = backend()
    b.script("/o", [Resp(200, b'{"i\\u0064": 5, "a": {"b": 1, "c": 2}, '
                             b'"s": "x", "drop": [1]}')])
    n = nginx.start(conf("""
        location = /f {
            aggregate whole /_svc/o fields=a,a.b;
            aggregate first /_svc/o fields=a.b,a;
            aggregate sub   /_svc/o fields=id,a.c,s.x,a.b.z;
        }
    """), modules=MOD, bport=b.port, rport=1)
    r = get(n, "/f")
    assert r.status_code == 200
    assert r.content == (b'{"whole":{"a":{"b":1,"c":2}},'
                         b'"first":{"a":{"b":1,"c":2}},'
                         b'"sub":{"id":5,"a":{"c":2}}}\n')


def test_flat_merge_replaces_in_place(nginx, backend):
    b = backend()
    b.json("/a", {"x": 1, "y": 1, "_errors": "mine", "b": 0})
    b.json("/b", {"y": 2, "z": 2, "x": 3})
    b.json("/d", {}, status=500)
    n = nginx.start(conf("""
        location = /f {
            aggregate a /_svc/a;
            aggregate b /_svc/b;
            aggregate d /_svc/d optional;
            aggregate_merge flat;
        }
    """), modules=MOD, bport=b.port, rport=1)
    r = get(n, "/f")
    assert r.status_code == 200
    assert r.content == (b'{"x":3,"y":2,"_errors":{"d":"status_500"},'
                         b'"b":0,"z":2}\n')


# -- $aggregate_ field variables -------------------------------------------

FIELDS = """
        location = /d {
            aggregate user /_svc/users/$arg_u;
            aggregate role /_svc/role/$aggregate_user_role optional;
            aggregate name /_svc/name/$aggregate_user_name optional;
            aggregate tab  /_svc/tab?t=$aggregate_user_tab optional;
            aggregate list /_svc/list?l=$aggregate_user_list optional;
            aggregate big  /_svc/big/$aggregate_user_big optional;
            aggregate deep /_svc/deep/$aggregate_user_obj__inner optional;
            add_header X-Name "[$aggregate_user_name]" always;
        }
"""


def test_field_variables_absent_and_control_bytes(nginx, backend):
    """An absent field never reads as another member's value; a field with
    control bytes reads as empty (one warn naming it, never the value) and
    the part that needs it is not started."""
    b = backend()
    b.json("/users/1", {
        "name": "ann\r\nX-Injected: yes", "tab": "a\tb",
        "list": [[], ["a", ["b"]], None, {"k": 1}],
        "big": 12345678901234567890, "obj": {"Inner": "deep"},
        "zlast": "admin"})
    n = nginx.start(conf(FIELDS), modules=MOD, bport=b.port, rport=1)
    r = get(n, "/d?u=1")
    assert r.status_code == 200
    doc = r.json()
    assert doc["_errors"] == {"role": "dependency", "name": "dependency",
                              "tab": "dependency"}
    assert r.headers["X-Name"] == "[]"
    assert "X-Injected" not in r.headers
    paths = sorted(x["path"] for x in b.requests)
    assert paths == ["/big/12345678901234567890", "/deep/deep", "/list",
                     "/users/1"]
    assert [x["query"] for x in b.requests if x["path"] == "/list"] == \
        ["l=%2Ca%2Cb%2C%2C%7B%22k%22%3A1%7D"]
    log = n.logs()
    assert re.search(r'\[warn\].*aggregate field "user_name" holds control '
                     r'bytes', log)
    assert re.search(r'\[warn\].*aggregate field "user_tab" holds control '
                     r'bytes', log)
    assert "Injected" not in log and "ann" not in log


CASELESS = """
        location = /d {
            aggregate user /_svc/users/$arg_u;
            aggregate role /_svc/role/$aggregate_user_role optional;
        }
"""


def test_ambiguous_caseless_field_reads_as_absent(nginx, backend):
    """$aggregate_<part>_<field> falls back to a member that matches without
    regard to case only when it is the one such member: with two, the
    field is absent (as in auth_jwt), not the one placed first."""
    b = backend()
    b.json("/users/1", {"rOLE": "admin", "Role": "user"})
    b.json("/users/2", {"ROLE": "ops"})
    b.json("/users/3", {"rOLE": "admin", "role": "user", "Role": "x"})
    n = nginx.start(conf(CASELESS), modules=MOD, bport=b.port, rport=1)
    for u in ("1", "2", "3"):
        assert get(n, "/d?u=" + u).status_code == 200
    paths = sorted(x["path"] for x in b.requests)
    assert paths == ["/role/ops", "/role/user", "/users/1", "/users/2",
                     "/users/3"], paths


@pytest.mark.parametrize("arg", ["'fields=a\"b'", "'fields=a\\\\b'",
                                 "\"fields=ok,x\\\"y\""])
def test_field_names_json_would_escape_fail_nginx_t(nginx_t, arg):
    nginx_t(conf("location = /x { aggregate a /_svc/a %s; }" % arg),
            modules=MOD, bport=1, rport=2, expect=r"invalid field in")


def raw(port, data):
    import socket
    from harness import recv_all
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(data)
        return recv_all(s)
    finally:
        s.close()


def test_http09_and_http10_requests(nginx, backend):
    """Every request nginx accepts: an HTTP/0.9 request (no header list)
    and HTTP/1.0 ones get the aggregation, the worker lives on."""
    b = backend()
    b.json("/users/1", {"id": 1, "name": "ann"})
    n = nginx.start(conf("""
        location = /d {
            aggregate user /_svc/users/1;
            aggregate same /_svc/users/$aggregate_user_id;
        }
    """), modules=MOD, bport=b.port, rport=1)
    pid = n.worker_pids()[0]
    out = raw(n.port, b"GET /d\r\n")
    assert json.loads(out) == {"user": {"id": 1, "name": "ann"},
                               "same": {"id": 1, "name": "ann"}}
    out = raw(n.port, b"GET /d HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"}}\n")
    out = raw(n.port, b"HEAD /d HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n")
    assert n.worker_pids() == [pid]
