"""Helpers for the mesh_metrics tests: a Prometheus text parser, promtool,
and W3C traceparent checks."""

import re
import subprocess

import requests

from harness import wait_for

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TRACEPARENT = re.compile(
    r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# An incoming trace (the W3C Trace Context example ids) the tests send.
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"

# The head of a traced config: the zone, tracing on, one upstream app.
TRACE_APP_CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;

upstream app {
    server 127.0.0.1:{{b1}};
}
"""


def otlp_local_conf(batch):
    """A gateway that exports spans of /local/ requests (answered by nginx
    itself) to the collector at {{c}}, batch spans a time, never by the
    interval (an hour); /metrics unsampled."""
    return """
mesh_metrics zone=mm:1m;
mesh_trace on;
mesh_trace_export otlp=http://127.0.0.1:{{c}}/v1/traces batch=%d interval=1h;

server {
    listen 127.0.0.1:{{port}};

    location /local/ {
        return 200 "local\\n";
    }

    location = /metrics {
        mesh_metrics off;
        mesh_trace off;
        mesh_metrics_export prometheus;
    }
}
""" % batch


def unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n"
                  else m.group(1), v)


def parse(text):
    """Samples of a Prometheus text exposition: [(name, labels, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line: %r" % line
        labels = {k: unescape(v) for k, v in LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = parse(text)

    def get(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for n, lab, v in self.samples:
            if n == name and all(lab.get(k) == str(val)
                                 for k, val in labels.items()):
                total += v
        return total

    def series(self, name):
        return [lab for n, lab, _ in self.samples if n == name]


def scrape(n, path="/metrics"):
    r = requests.get(n.url(path), timeout=10)
    assert r.status_code == 200, r.text
    return Metrics(r.text)


def wait_metric(n, name, expected, **labels):
    """Polls until the metric reaches `expected` (the log phase runs after
    the response), returns the scrape."""
    last = {}

    def reached():
        m = scrape(n)
        last["m"] = m
        return m.get(name, **labels) >= expected and m
    try:
        return wait_for(reached, 15, "%s%s = %s" % (name, labels, expected))
    except TimeoutError:
        raise AssertionError("%s%s = %s, expected %s\n%s" % (
            name, labels, last["m"].get(name, **labels), expected,
            last["m"].text[:3000]))


def promtool(text):
    """Runs `promtool check metrics`; asserts no error and no warning."""
    p = subprocess.run(["promtool", "check", "metrics"], input=text,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "", \
        "promtool rc=%d: %s" % (p.returncode, p.stdout)


def png_pixels(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA,
    non-interlaced PNG, such as a Chromium screenshot."""
    import struct
    import zlib
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(
                ">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(h):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        rows.append([tuple(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return w, h, rows


def runs(indexes):
    """Contiguous runs in a sorted list of integers: [(first, last)]."""
    out = []
    for v in indexes:
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return [tuple(r) for r in out]


def pb_fields(data):
    """One protobuf message: {field number: [values]}; varints as ints,
    fixed64 and length-delimited fields as bytes."""
    out, i = {}, 0

    def varint():
        nonlocal i
        v, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            v |= (b & 0x7f) << shift
            shift += 7
            if b < 0x80:
                return v
    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            v = varint()
        elif wire == 1:
            v, i = data[i:i + 8], i + 8
        elif wire == 2:
            n = varint()
            v, i = data[i:i + n], i + n
            assert len(v) == n, "truncated field %d" % field
        elif wire == 5:
            v, i = data[i:i + 4], i + 4
        else:
            raise AssertionError("wire type %d" % wire)
        out.setdefault(field, []).append(v)
    return out


def pb_attributes(values):
    attrs = {}
    for kv in values:
        k = pb_fields(kv)
        any_ = pb_fields(k[2][0])
        key = k[1][0].decode()
        if 1 in any_:
            attrs[key] = any_[1][0].decode("utf-8")
        else:
            attrs[key] = any_[3][0]
    return attrs


def otlp_spans(body):
    """The spans of an OTLP/HTTP ExportTraceServiceRequest (protobuf):
    [dict(trace, span, parent, name, kind, start, end, attrs, status,
    service, scope)]."""
    spans = []
    for rs in pb_fields(body)[1]:
        rsd = pb_fields(rs)
        resource = pb_attributes(pb_fields(rsd[1][0]).get(1, []))
        for ss in rsd.get(2, []):
            ssd = pb_fields(ss)
            scope = pb_fields(ssd[1][0])[1][0].decode()
            for sp in ssd.get(2, []):
                s = pb_fields(sp)
                spans.append(dict(
                    trace=s[1][0].hex(), span=s[2][0].hex(),
                    parent=s.get(4, [b""])[0].hex(), name=s[5][0].decode(),
                    kind=s[6][0],
                    start=int.from_bytes(s[7][0], "little"),
                    end=int.from_bytes(s[8][0], "little"),
                    attrs=pb_attributes(s.get(9, [])),
                    status=pb_fields(s[15][0]).get(3, [0])[0]
                    if 15 in s else 0,
                    service=resource.get("service.name"), scope=scope))
    return spans
