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


def svid():
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2026, 1, 1)

    def cert(name, sans, ca=False, usage=True, subject="svid"):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(
                 NameOID.COMMON_NAME, subject)] if subject else []))
             .issuer_name(x509.Name([x509.NameAttribute(
                 NameOID.COMMON_NAME, "ca")]))
             .public_key(key.public_key()).serial_number(1)
             .not_valid_before(now)
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                            critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans),
                                critical=not subject)
        if usage:
            b = b.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=ca, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
        c = b.sign(key, hashes.SHA256())
        write("svid", name, c.public_bytes(serialization.Encoding.DER))

    uri = x509.UniformResourceIdentifier
    cert("ok", [uri("spiffe://example.org/ns/default/sa/web")])
    cert("no-subject", [uri("spiffe://td/a")], subject=None)
    cert("two-uris", [uri("spiffe://td/a"), uri("spiffe://td/b")])
    cert("dns", [x509.DNSName("web.example.org")])
    cert("ca", [uri("spiffe://td/a")], ca=True)
    cert("bad-id", [uri("spiffe://TD/../a")], usage=False)


def spiffe():
    write("spiffe", "exact", "spiffe://example.org/ns/default/sa/web\n"
          "spiffe://example.org/ns/default/sa/web\nspiffe://other/a")
    write("spiffe", "prefix", "spiffe://example.org/ns/default/sa/web\n"
          "spiffe://example.org/ns/*\nspiffe://example.org/*")
    write("spiffe", "any", "spiffe://td\n*")
    write("spiffe", "bad", "spiffe://td/a/./b\nspiffe://td//*\n"
          "spiffe://T_D/x\nhttp://td/a\n/*")


def jwe():
    import hashlib
    import hmac
    from cryptography.hazmat.primitives import hashes, padding as sym_pad
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import (
        Cipher, algorithms, modes)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    k16, k32 = bytes(range(16)), bytes(range(32))
    rsa = J.key("rsa")
    nums = rsa.private_numbers()
    pub = nums.public_numbers
    priv = {"kty": "RSA", "kid": "o", "use": "enc",
            "n": J.b64u_int(pub.n), "e": J.b64u_int(pub.e),
            "d": J.b64u_int(nums.d), "p": J.b64u_int(nums.p),
            "q": J.b64u_int(nums.q), "dp": J.b64u_int(nums.dmp1),
            "dq": J.b64u_int(nums.dmq1), "qi": J.b64u_int(nums.iqmp)}
    keys = [{"kty": "oct", "kid": "w", "use": "enc", "alg": "A128KW",
             "k": J.b64u(k16)},
            {"kty": "oct", "kid": "c", "use": "enc", "k": J.b64u(k32)},
            priv, J.jwk("hmac", kid="h")]
    with open(os.path.join(HERE, "ngx_fuzz_jwe_keys.h"), "w") as f:
        f.write("\n/* written by t/fuzz/seeds.py: the keys that decrypt the"
                " jwe seeds */\n\n"
                "#define NGX_FUZZ_JWE_KEYS                          "
                "                    \\\n" + c_string(J.jwks(*keys))
                .replace("\n", " \\\n") + "\n")

    def mint(name, alg, enc, cek, ek, pt, kid, cty=None):
        h = {"alg": alg, "enc": enc, "kid": kid}
        if cty:
            h["cty"] = cty
        aad = J.b64u(json.dumps(h)).encode()
        if enc.endswith("GCM"):
            iv = bytes(12)
            out = AESGCM(cek).encrypt(iv, pt, aad)
            ct, tag = out[:-16], out[-16:]
        else:
            n = len(cek) // 2
            iv = bytes(16)
            padder = sym_pad.PKCS7(128).padder()
            data = padder.update(pt) + padder.finalize()
            e = Cipher(algorithms.AES(cek[n:]), modes.CBC(iv)).encryptor()
            ct = e.update(data) + e.finalize()
            al = (len(aad) * 8).to_bytes(8, "big")
            tag = hmac.new(cek[:n], aad + iv + ct + al,
                           hashlib.sha256).digest()[:n]
        write("jwe", name, ".".join([aad.decode(), J.b64u(ek), J.b64u(iv),
                                     J.b64u(ct), J.b64u(tag)]))

    claims = json.dumps(J.claims(role="admin")).encode()
    inner = J.token("HS256", kid="h").encode()
    cek = bytes(range(100, 132))
    mint("dir-cbc", "dir", "A128CBC-HS256", k32, b"", claims, "c")
    mint("kw-gcm", "A128KW", "A256GCM", cek, aes_key_wrap(k16, cek),
         claims, "w")
    mint("oaep-nested", "RSA-OAEP", "A128GCM", cek[:16],
         rsa.public_key().encrypt(cek[:16], padding.OAEP(
             padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)),
         inner, "o", cty="JWT")


TARGETS = {"jwt": jwt, "jwe": jwe, "svid": svid, "spiffe": spiffe}


def main():
    for name in sys.argv[1:] or TARGETS:
        TARGETS[name]()


if __name__ == "__main__":
    main()
