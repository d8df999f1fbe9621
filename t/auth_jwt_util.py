"""Keys, JWKS and token minting for the auth_jwt tests.

Tokens are built by hand (not only with python3-jwt) so that the tests can
send every malformed or hostile variant the module must reject."""

import base64
import hashlib
import hmac as hmac_mod
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature)

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
EC_SIZE = {"ES256": 32, "ES384": 48, "ES512": 66}
HMAC_SECRET = bytes(range(64))

# The server behind the gateway in the tests' configs.
BACKEND_CONF = """
    server {
        listen 127.0.0.1:{{port1}};
        location / { return 200 "backend\\n"; }
    }
"""


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_int(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64u(n.to_bytes(size, "big"))


_cache = {}


def key(name):
    """A private key made once per test session: rsa, rsa2, ec256, ec384,
    ec521, ed, ed2."""
    if name not in _cache:
        if name.startswith("rsa"):
            k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif name.startswith("ec256"):
            k = ec.generate_private_key(ec.SECP256R1())
        elif name == "ec384":
            k = ec.generate_private_key(ec.SECP384R1())
        elif name == "ec521":
            k = ec.generate_private_key(ec.SECP521R1())
        elif name.startswith("ed"):
            k = ed25519.Ed25519PrivateKey.generate()
        else:
            raise KeyError(name)
        _cache[name] = k
    return _cache[name]


def key_for(alg):
    return {"RS": "rsa", "PS": "rsa", "ES": {"ES256": "ec256",
                                               "ES384": "ec384",
                                               "ES512": "ec521"}.get(alg),
            "Ed": "ed"}.get(alg[:2])


def jwk(name, kid=None, alg=None, **extra):
    """The public JWK of key(name), or an oct JWK for name 'hmac'."""
    if name == "hmac":
        d = {"kty": "oct", "k": b64u(extra.pop("secret", HMAC_SECRET))}
    else:
        pub = key(name).public_key()
        if name.startswith("rsa"):
            nums = pub.public_numbers()
            d = {"kty": "RSA", "n": b64u_int(nums.n), "e": b64u_int(nums.e)}
        elif name.startswith("ec"):
            nums = pub.public_numbers()
            crv = {"ec256": ("P-256", 32), "ec384": ("P-384", 48),
                   "ec521": ("P-521", 66)}[name[:5]]
            d = {"kty": "EC", "crv": crv[0], "x": b64u_int(nums.x, crv[1]),
                 "y": b64u_int(nums.y, crv[1])}
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw,
                                   serialization.PublicFormat.Raw)
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw)}
    if kid:
        d["kid"] = kid
    if alg:
        d["alg"] = alg
    d.update(extra)
    return d


def jwks(*keys):
    return json.dumps({"keys": list(keys)})


def pem(name):
    return key(name).public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(alg, data, keyname=None, secret=HMAC_SECRET):
    bits = alg[2:]
    if alg.startswith("HS"):
        return hmac_mod.new(secret, data, getattr(hashlib, "sha" + bits)
                            ).digest()
    k = key(keyname or key_for(alg))
    if alg.startswith("RS"):
        return k.sign(data, padding.PKCS1v15(), HASHES[bits]())
    if alg.startswith("PS"):
        h = HASHES[bits]()
        return k.sign(data, padding.PSS(padding.MGF1(HASHES[bits]()),
                                        h.digest_size), h)
    if alg.startswith("ES"):
        der = k.sign(data, ec.ECDSA(HASHES[bits]()))
        r, s = decode_dss_signature(der)
        size = EC_SIZE[alg]
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return k.sign(data)
    raise ValueError(alg)


def claims(**kw):
    c = {"sub": "alice", "iss": "https://idp.test", "aud": "api",
         "exp": int(time.time()) + 600}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def token(alg="RS256", payload=None, header=None, keyname=None,
          secret=HMAC_SECRET, kid=None, raw_header=None, raw_payload=None,
          sig=None):
    """A compact JWS.  header/payload dicts are JSON-encoded; raw_* give
    the exact bytes; sig overrides the signature bytes."""
    h = {"alg": alg, "typ": "JWT"}
    if kid:
        h["kid"] = kid
    if header is not None:
        h = header
    hb = raw_header if raw_header is not None else json.dumps(h).encode()
    pb = (raw_payload if raw_payload is not None
          else json.dumps(claims() if payload is None else payload).encode())
    signing_input = (b64u(hb) + "." + b64u(pb)).encode()
    if sig is None:
        sig = sign(alg, signing_input, keyname, secret)
    return signing_input.decode() + "." + b64u(sig)


def resign(tok, alg="RS256", keyname=None, secret=HMAC_SECRET):
    """Signs the first two segments of tok as they are."""
    si = tok.rsplit(".", 1)[0].encode()
    return si.decode() + "." + b64u(sign(alg, si, keyname, secret))


# -- JWE (RFC 7516), built from python3-cryptography primitives ------------

JWE_ENCS = {
    # name: (content key bytes, mode, HMAC hash, tag bytes)
    "A128CBC-HS256": (32, "cbc", hashes.SHA256, 16),
    "A192CBC-HS384": (48, "cbc", hashes.SHA384, 24),
    "A256CBC-HS512": (64, "cbc", hashes.SHA512, 32),
    "A128GCM": (16, "gcm", None, 16),
    "A192GCM": (24, "gcm", None, 16),
    "A256GCM": (32, "gcm", None, 16),
}
JWE_KW = {"A128KW": 16, "A192KW": 24, "A256KW": 32}
JWE_GCMKW = {"A128GCMKW": 16, "A192GCMKW": 24, "A256GCMKW": 32}
JWE_OAEP = {"RSA-OAEP": hashes.SHA1, "RSA-OAEP-256": hashes.SHA256,
            "RSA-OAEP-384": hashes.SHA384, "RSA-OAEP-512": hashes.SHA512}
JWE_ALGS = ["dir"] + list(JWE_KW) + list(JWE_GCMKW) + list(JWE_OAEP)


def jwe_key_len(alg, enc):
    """The oct key length that alg/enc need (dir: the content key's)."""
    if alg == "dir":
        return JWE_ENCS[enc][0]
    return JWE_KW.get(alg) or JWE_GCMKW.get(alg)


def oct_key(n):
    """A fixed oct key of n bytes for the JWE tests."""
    return bytes((7 * i + n) % 256 for i in range(n))


def private_jwk(name, kid=None, **extra):
    """The private RSA JWK of key(name), for RSA-OAEP."""
    nums = key(name).private_numbers()
    pub = nums.public_numbers
    d = {"kty": "RSA", "n": b64u_int(pub.n), "e": b64u_int(pub.e),
         "d": b64u_int(nums.d), "p": b64u_int(nums.p),
         "q": b64u_int(nums.q), "dp": b64u_int(nums.dmp1),
         "dq": b64u_int(nums.dmq1), "qi": b64u_int(nums.iqmp)}
    if kid:
        d["kid"] = kid
    d.update(extra)
    return d


def jwe(plaintext, alg="dir", enc="A256GCM", secret=None, keyname="rsa3",
        kid=None, header=None, cek=None):
    """A compact JWE of plaintext (bytes, str or a dict of claims).
    secret: the oct key (dir, KW, GCMKW); keyname: the RSA key (OAEP)."""
    import os
    from cryptography.hazmat.primitives import hmac as hmac_p
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.ciphers import (
        Cipher, algorithms, modes)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap

    if isinstance(plaintext, dict):
        plaintext = json.dumps(plaintext).encode()
    elif isinstance(plaintext, str):
        plaintext = plaintext.encode()
    cek_len, mode, mac_hash, tag_len = JWE_ENCS[enc]
    h = {"alg": alg, "enc": enc}
    if kid:
        h["kid"] = kid
    if secret is None and alg != "dir" and alg not in JWE_OAEP:
        secret = oct_key(jwe_key_len(alg, enc))
    if alg == "dir":
        cek = secret if secret is not None else oct_key(cek_len)
        ek = b""
    else:
        cek = cek or os.urandom(cek_len)
        if alg in JWE_KW:
            ek = aes_key_wrap(secret, cek)
        elif alg in JWE_GCMKW:
            kiv = os.urandom(12)
            out = AESGCM(secret).encrypt(kiv, cek, None)
            ek = out[:-16]
            h["iv"] = b64u(kiv)
            h["tag"] = b64u(out[-16:])
        else:
            hh = JWE_OAEP[alg]
            ek = key(keyname).public_key().encrypt(
                cek, padding.OAEP(padding.MGF1(hh()), hh(), None))
    if header:
        h.update(header)
    protected = b64u(json.dumps(h))
    aad = protected.encode()
    if mode == "gcm":
        iv = os.urandom(12)
        out = AESGCM(cek).encrypt(iv, plaintext, aad)
        ct, tag = out[:-16], out[-16:]
    else:
        half = cek_len // 2
        iv = os.urandom(16)
        padder = sym_padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        e = Cipher(algorithms.AES(cek[half:]), modes.CBC(iv)).encryptor()
        ct = e.update(padded) + e.finalize()
        m = hmac_p.HMAC(cek[:half], mac_hash())
        m.update(aad + iv + ct + (len(aad) * 8).to_bytes(8, "big"))
        tag = m.finalize()[:tag_len]
    return ".".join([protected, b64u(ek), b64u(iv), b64u(ct), b64u(tag)])


def b64d(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.urlsafe_b64decode(s + b"=" * (-len(s) % 4))
