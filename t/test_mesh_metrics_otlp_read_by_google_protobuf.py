"""ngx_http_mesh_metrics_module: the OTLP/HTTP export body, decoded by
google.protobuf (python3-protobuf) rather than by hand.  The encoder in
ngx_http_mesh_metrics_otlp.c and the reader in t/mesh_metrics_util.py were
written by the same hands: here the message classes are built at test
time from the .proto text below (the OTLP messages a trace export uses,
with their field numbers and types as in opentelemetry-proto), and
protobuf's own parser must read every body with no unknown field, valid
UTF-8 in every string, and the same spans the hand-written reader sees."""

import re

import requests
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness import Resp, require_module, wait_for
from mesh_metrics_util import TRACEPARENT, otlp_spans

require_module("mesh_metrics")

OTLP_PROTO = """
// opentelemetry/proto: collector/trace/v1/trace_service.proto,
// trace/v1/trace.proto, resource/v1/resource.proto,
// common/v1/common.proto (the messages a trace export uses)
message ExportTraceServiceRequest {
  repeated ResourceSpans resource_spans = 1;
}
message ResourceSpans {
  Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
  string schema_url = 3;
}
message Resource {
  repeated KeyValue attributes = 1;
  uint32 dropped_attributes_count = 2;
}
message ScopeSpans {
  InstrumentationScope scope = 1;
  repeated Span spans = 2;
  string schema_url = 3;
}
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  uint32 dropped_events_count = 12;
  uint32 dropped_links_count = 14;
  Status status = 15;
}
enum SpanKind {
  SPAN_KIND_UNSPECIFIED = 0;
  SPAN_KIND_INTERNAL = 1;
  SPAN_KIND_SERVER = 2;
  SPAN_KIND_CLIENT = 3;
  SPAN_KIND_PRODUCER = 4;
  SPAN_KIND_CONSUMER = 5;
}
message Status {
  string message = 2;
  StatusCode code = 3;
}
enum StatusCode {
  STATUS_CODE_UNSET = 0;
  STATUS_CODE_OK = 1;
  STATUS_CODE_ERROR = 2;
}
message KeyValue {
  string key = 1;
  AnyValue value = 2;
}
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue {
  repeated AnyValue values = 1;
}
message KeyValueList {
  repeated KeyValue values = 1;
}
"""


FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {"string": FDP.TYPE_STRING, "bytes": FDP.TYPE_BYTES,
           "bool": FDP.TYPE_BOOL, "int64": FDP.TYPE_INT64,
           "uint32": FDP.TYPE_UINT32, "double": FDP.TYPE_DOUBLE,
           "fixed32": FDP.TYPE_FIXED32, "fixed64": FDP.TYPE_FIXED64}
PACKAGE = "meshgate.test.otlp"


def compile_proto(text):
    """The message classes of a .proto text (messages, top-level enums,
    a oneof; no nesting, no imports), with no protoc: a
    FileDescriptorProto built line by line."""
    f = descriptor_pb2.FileDescriptorProto(
        name="otlp_subset.proto", package=PACKAGE, syntax="proto3")
    enums = set(re.findall(r"^enum (\w+)", text, re.M))
    block, oneof = None, None
    for line in text.splitlines():
        line = line.split("//")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(message|enum) (\w+) \{", line)
        if m:
            block = (f.message_type if m.group(1) == "message"
                     else f.enum_type).add(name=m.group(2))
            continue
        m = re.fullmatch(r"oneof (\w+) \{", line)
        if m:
            block.oneof_decl.add(name=m.group(1))
            oneof = len(block.oneof_decl) - 1
            continue
        if line == "}":
            if oneof is not None:
                oneof = None
            else:
                block = None
            continue
        m = re.fullmatch(r"(\w+) = (\d+);", line)
        if m and isinstance(block, descriptor_pb2.EnumDescriptorProto):
            block.value.add(name=m.group(1), number=int(m.group(2)))
            continue
        m = re.fullmatch(r"(repeated )?(\w+) (\w+) = (\d+);", line)
        assert m and block is not None, line
        fd = block.field.add(
            name=m.group(3), number=int(m.group(4)),
            label=FDP.LABEL_REPEATED if m.group(1) else FDP.LABEL_OPTIONAL)
        if m.group(2) in SCALARS:
            fd.type = SCALARS[m.group(2)]
        else:
            fd.type = (FDP.TYPE_ENUM if m.group(2) in enums
                       else FDP.TYPE_MESSAGE)
            fd.type_name = ".%s.%s" % (PACKAGE, m.group(2))
        if oneof is not None:
            fd.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    messages = pool.FindFileByName(f.name).message_types_by_name
    if hasattr(message_factory, "GetMessageClass"):
        return {n: message_factory.GetMessageClass(d)
                for n, d in messages.items()}
    factory = message_factory.MessageFactory(pool)
    return {n: factory.GetPrototype(d) for n, d in messages.items()}


OTLP = compile_proto(OTLP_PROTO)


def test_the_proto_text_compiles_to_what_it_says():
    """The little compiler itself: a field of every kind round-trips,
    and a field the text does not declare is seen as unknown."""
    req = OTLP["ExportTraceServiceRequest"]()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        name="x", kind=3, start_time_unix_nano=2 ** 63, flags=0x101)
    span.status.code = 2
    kv = span.attributes.add(key="k")
    kv.value.int_value = -5
    again = OTLP["ExportTraceServiceRequest"].FromString(
        req.SerializeToString())
    s = again.resource_spans[0].scope_spans[0].spans[0]
    assert (s.name, s.kind, s.start_time_unix_nano, s.flags) == \
        ("x", 3, 2 ** 63, 0x101)
    assert s.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[
        3].name == "SPAN_KIND_CLIENT"
    assert s.attributes[0].value.WhichOneof("value") == "int_value"
    assert unknown_fields(again) == []
    # field 20 (varint 1) appended to the request: unknown
    odd = OTLP["ExportTraceServiceRequest"].FromString(
        req.SerializeToString() + b"\xa0\x01\x01")
    assert unknown_fields(odd) == ["ExportTraceServiceRequest"]


def unknown_fields(msg, path=None):
    """Where in msg, recursively, protobuf kept fields it does not know
    (a wrong field number, or a wrong wire type for a known one)."""
    path = path or msg.DESCRIPTOR.name
    out = [path] if len(msg.UnknownFields()) else []
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        for i, m in enumerate(value if fd.label == fd.LABEL_REPEATED
                              else [value]):
            out += unknown_fields(m, "%s.%s[%d]" % (path, fd.name, i))
    return out


def attributes(kvs):
    """{key: value} of KeyValues, each value from the oneof that is set."""
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        assert which in ("string_value", "int_value"), (kv.key, which)
        out[kv.key] = getattr(kv.value, which)
    return out


def decode(body):
    """The spans of one export body as protobuf reads it, in the shape of
    mesh_metrics_util.otlp_spans()."""
    req = OTLP["ExportTraceServiceRequest"].FromString(body)
    assert unknown_fields(req) == []
    spans = []
    for rs in req.resource_spans:
        service = attributes(rs.resource.attributes).get("service.name")
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(dict(
                    trace=s.trace_id.hex(), span=s.span_id.hex(),
                    parent=s.parent_span_id.hex(), name=s.name,
                    kind=s.kind, start=s.start_time_unix_nano,
                    end=s.end_time_unix_nano,
                    attrs=attributes(s.attributes), status=s.status.code,
                    service=service, scope=ss.scope.name))
    return spans


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"

CONF = """
mesh_metrics zone=mm:1m;
mesh_trace on;
mesh_trace_export otlp=http://127.0.0.1:{{c}}/v1/traces batch=3
                  interval=100ms service=gw-é;

upstream two {
    server 127.0.0.1:{{bad}};
    server 127.0.0.1:{{good}};
}

server {
    listen 127.0.0.1:{{port}};
    add_header X-Span $mesh_span_id always;

    location /api/ {
        mesh_metrics_route api;
        proxy_next_upstream error http_503;
        proxy_pass http://two;
    }
}
"""


def test_export_body_reads_the_same_with_google_protobuf(nginx, backend):
    bad, good, c = backend(), backend(), backend()
    bad.script(None, [Resp(503, "no")])
    n = nginx.start(CONF, modules=["mesh_metrics"], c=c.port,
                    bad=bad.port, good=good.port)
    r = requests.get(n.url("/api/x"), timeout=10, headers={
        "traceparent": "00-%s-%s-01" % (TRACE, PARENT)})
    assert r.status_code == 200

    def bodies():
        b = [q["body"].encode("latin-1") for q in c.requests
             if q["path"] == "/v1/traces"]
        return sum(len(otlp_spans(x)) for x in b) >= 3 and b
    got = wait_for(bodies, 15, "3 spans at the collector")

    spans = []
    for body in got:
        mine = decode(body)
        # the hand-written reader of the other OTLP tests agrees
        assert mine == otlp_spans(body)
        spans += mine
    server = [s for s in spans if s["kind"] == 2]
    client = [s for s in spans if s["kind"] == 3]
    assert len(spans) == 3 and len(server) == 1 and len(client) == 2
    s = server[0]
    assert (s["trace"], s["parent"], s["span"]) == \
        (TRACE, PARENT, r.headers["X-Span"])
    assert s["service"] == "gw-\u00e9" and s["scope"] == "meshgate"
    assert s["name"] == "GET api"
    assert s["attrs"]["http.response.status_code"] == 200
    assert s["attrs"]["http.route"] == "api"
    first, second = sorted(client, key=lambda x: x["start"])
    assert all(x["trace"] == TRACE and x["parent"] == s["span"]
               for x in client)
    assert first["attrs"]["http.response.status_code"] == 503
    assert first["status"] == 2 and second["status"] == 0
    assert second["attrs"]["http.request.resend_count"] == 1
    assert second["attrs"]["network.peer.port"] == good.port
    seen = TRACEPARENT.match(good.requests[0]["headers"]["traceparent"])
    assert seen.group(2) == second["span"]
    # times are whole milliseconds of the wall clock, and a client span's
    # end is its start plus nginx's (monotonic) response time: spans are
    # not compared with each other here
    assert all(0 < x["start"] <= x["end"] for x in spans)
