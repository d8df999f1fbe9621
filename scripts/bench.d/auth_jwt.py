"""auth_jwt benchmark scenarios: RS256 with one repeated token (cache on
and off), then 10,000 distinct RS256, ES256 and HS256 tokens without the
verified-token cache (every request verifies a signature), and 10,000
distinct JWE tokens (dir, A256GCM: every request decrypts one)."""

import os
import sys
import time

UNIQUE = 10000


def _util(ctx):
    sys.path.insert(0, os.path.join(ctx.top, "t"))
    import auth_jwt_util
    return auth_jwt_util


def _conf(keys, cache, extra=""):
    return """
    %s
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / {
            auth_jwt "bench";
            auth_jwt_key_file %s;
            %s
            proxy_pass http://backend;
        }
    }
""" % ("auth_jwt_cache zone=jwt_bench:16m;" if cache else "", keys, extra)


def _tokens(U, alg, kid, n):
    exp = int(time.time()) + 86400
    return ["Bearer " + U.token(alg, U.claims(exp=exp, jti="%d" % i),
                                kid=kid)
            for i in range(n)]


def scenarios(ctx):
    U = _util(ctx)
    keys = os.path.join(ctx.tmp, "auth_jwt_keys.json")
    with open(keys, "w") as f:
        f.write(U.jwks(U.jwk("rsa", kid="r"), U.jwk("ec256", kid="e"),
                       U.jwk("hmac", kid="h")))
    one = "Bearer " + U.token("RS256", U.claims(exp=int(time.time()) + 86400),
                              kid="r")
    out = [
        {"name": "jwt-rs256-same", "modules": ["auth_jwt"],
         "http": _conf(keys, True), "path": "/api/x",
         "headers": {"Authorization": one}, "expect": 200},
        {"name": "jwt-rs256-same-nocache", "modules": ["auth_jwt"],
         "http": _conf(keys, False), "path": "/api/x",
         "headers": {"Authorization": one}, "expect": 200},
    ]
    # references without the module: a plain proxy sent the same header,
    # and the same 10,000 distinct headers through wrk's Lua script, to
    # tell the cost of verification from that of the bigger requests and
    # of the load generator
    plain = """
    server {
        listen 127.0.0.1:{{port}} backlog=4096;
        keepalive_requests 100000;
        location / { proxy_pass http://backend; }
    }
"""
    out.append({"name": "jwt-ref-proxy-header", "modules": [],
                "http": plain, "path": "/api/x",
                "headers": {"Authorization": one}, "expect": 200})
    out.append({"name": "jwt-ref-proxy-unique", "modules": [],
                "http": plain, "path": "/api/x",
                "header_values": {"Authorization": _tokens(U, "HS256", "h",
                                                           UNIQUE)},
                "expect": 200})
    for alg, kid in (("RS256", "r"), ("ES256", "e"), ("HS256", "h")):
        out.append({
            "name": "jwt-%s-unique" % alg.lower(), "modules": ["auth_jwt"],
            "http": _conf(keys, False), "path": "/api/x",
            "header_values": {"Authorization": _tokens(U, alg, kid,
                                                       UNIQUE)},
            "expect": 200})
    # JWE: a 256-bit oct key for dir with A256GCM
    jwe_keys = os.path.join(ctx.tmp, "auth_jwt_jwe_keys.json")
    with open(jwe_keys, "w") as f:
        f.write(U.jwks({"kty": "oct", "kid": "j", "use": "enc",
                        "k": U.b64u(U.oct_key(32))}))
    exp = int(time.time()) + 86400
    jwes = ["Bearer " + U.jwe(U.claims(exp=exp, jti="%d" % i), "dir",
                              "A256GCM", kid="j")
            for i in range(UNIQUE)]
    out.append({
        "name": "jwt-jwe-dir-a256gcm-unique", "modules": ["auth_jwt"],
        "bar": 0.60,  # issue 19: >= 0.60x the scripted baseline
        "http": _conf(jwe_keys, False, "auth_jwt_type encrypted;"),
        "path": "/api/x", "header_values": {"Authorization": jwes},
        "expect": 200})
    return out
