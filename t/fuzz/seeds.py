#!/usr/bin/python3
"""Writes the seed corpora of t/fuzz/corpus/<target>/ and the fixed keys of
the jwt harness (t/fuzz/ngx_fuzz_jwt_keys.h).  Run it again only to
change the seeds: new keys change every signed seed.

    /usr/bin/python3 t/fuzz/seeds.py [TARGET...]
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import auth_jwt_util as J  # noqa: E402


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def c_string(s):
    out = []
    for i in range(0, len(s), 64):
        chunk = s[i:i + 64].replace("\\", "\\\\").replace('"', '\\"')
        out.append('    "%s"' % chunk)
    return "\n".join(out)


def jwt():
    keys = [J.jwk("hmac", kid="h"), J.jwk("rsa", kid="r"),
            J.jwk("ec256", kid="e"), J.jwk("ed", kid="d")]
    with open(os.path.join(HERE, "ngx_fuzz_jwt_keys.h"), "w") as f:
        f.write("\n/* written by t/fuzz/seeds.py: the public keys that signed"
                " the jwt seeds */\n\n"
                "#define NGX_FUZZ_JWT_KEYS                          "
                "                    \\\n" + c_string(J.jwks(*keys))
                .replace("\n", " \\\n") + "\n")

    names = {"HS256": "h", "RS256": "r", "PS256": "r", "ES256": "e",
             "EdDSA": "d"}
    for alg, kid in names.items():
        write("jwt", alg.lower(),
              "role\n" + J.token(alg, kid=kid,
                                 payload=J.claims(role="admin")))
    write("jwt", "no-role", "role\n" + J.token("HS256", kid="h"))
    write("jwt", "ctl", "name\n" + J.token(
        "HS256", kid="h", payload=J.claims(name="a\r\nX-Injected: yes")))
    write("jwt", "case", "Role\n" + J.token(
        "HS256", payload=J.claims(ROLE="x", Scope=["a", "b"],
                                  ext={"k": [1, 2.5, None, True]})))
    write("jwt", "crit", "sub\n" + J.token(
        "HS256", header={"alg": "HS256", "crit": ["b64"], "b64": False}))
    write("jwt", "jwe", "sub\neyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00i"
          "fQ.a.b.c.d")

    write("jwks", "set", "s" + J.jwks(*keys, J.jwk("ec384"), J.jwk("ec521"),
                                      J.jwk("rsa2", alg="PS256")))
    write("jwks", "one", "s" + json.dumps(J.jwk("ec256", use="sig",
                                                key_ops=["verify"])))
    write("jwks", "pem", "f" + J.pem("rsa") + J.pem("ec256") + J.pem("ed"))
    write("jwks", "mixed", "w" + J.jwks(
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "oct", "k": ""}, {"kty": "OKP", "crv": "X25519", "x": "AA"},
        J.jwk("hmac", alg="HS512")))


TARGETS = {"jwt": jwt}


def main():
    for name in sys.argv[1:] or TARGETS:
        TARGETS[name]()


if __name__ == "__main__":
    main()
