"""auth_jwt_type encrypted against tokens nobody here made: the RSA-OAEP
and AES-GCM key wrap examples of RFC 7516 Appendix A.1 and RFC 7520
sections 5.2 and 5.7, with their published keys; and the JWK members
that say what a key is for ("use", "key_ops", "alg", RFC 7517 section 4):
a key marked for signatures never decrypts, one marked for JWE never
verifies a signature.

The published vectors are first decrypted here in Python, so that a
transcription error shows up as such and not as a module bug."""

import json
import os
import re

import pytest
import requests
from cryptography.hazmat.primitives import constant_time, hashes
from cryptography.hazmat.primitives import hmac as hmac_p
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from harness import require_module
import auth_jwt_util as U

require_module("auth_jwt")

MOD = ["auth_jwt"]

# -- RFC 7516 Appendix A.1: RSA-OAEP, A256GCM (the key has no "kid") -------

A1_KEY = {
    "kty": "RSA",
    "n": "oahUIoWw0K0usKNuOR6H4wkf4oBUXHTxRvgb48E-BVvxkeDNjbC4he8rUWcJoZmds2h"
         "7M70imEVhRU5djINXtqllXI4DFqcI1DgjT9LewND8MW2Krf3Spsk_ZkoFnilakGygT"
         "wpZ3uesH-PFABNIUYpOiN15dsQRkgr0vEhxN92i2asbOenSZeyaxziK72UwxrrKoExv"
         "6kc5twXTq4h-QChLOln0_mtUZwfsRaMStPs6mS6XrgxnxbWhojf663tuEQueGC-FCMf"
         "ra36C9knDFGzKsNa7LZK2djYgyD3JR_MB_4NUJW_TqOQtwHYbxevoJArm-L5StowjzG"
         "y-_bq6Gw",
    "e": "AQAB",
    "d": "kLdtIj6GbDks_ApCSTYQtelcNttlKiOyPzMrXHeI-yk1F7-kpDxY4-WY5NWV5KntaE"
         "eXS1j82E375xxhWMHXyvjYecPT9fpwR_M9gV8n9Hrh2anTpTD93Dt62ypW3yDsJzBnT"
         "nrYu1iwWRgBKrEYY46qAZIrA2xAwnm2X7uGR1hghkqDp0Vqj3kbSCz1XyfCs6_LehBw"
         "txHIyh8Ripy40p24moOAbgxVw3rxT_vlt3UVe4WO3JkJOzlpUf-KTVI2Ptgm-dARxTE"
         "tE-id-4OJr0h-K-VFs3VSndVTIznSxfyrj8ILL6MG_Uv8YAu7VILSB3lOW085-4qE3D"
         "zgrTjgyQ",
    "p": "1r52Xk46c-LsfB5P442p7atdPUrxQSy4mti_tZI3Mgf2EuFVbUoDBvaRQ-SWxkbkmo"
         "EzL7JXroSBjSrK3YIQgYdMgyAEPTPjXv_hI2_1eTSPVZfzL0lffNn03IXqWF5MDFuoU"
         "YE0hzb2vhrlN_rKrbfDIwUbTrjjgieRbwC6Cl0",
    "q": "wLb35x7hmQWZsWJmB_vle87ihgZ19S8lBEROLIsZG4ayZVe9Hi9gDVCOBmUDdaDYVT"
         "SNx_8Fyw1YYa9XGrGnDew00J28cRUoeBB_jKI1oma0Orv1T9aXIWxKwd4gvxFImOWr3"
         "QRL9KEBRzk2RatUBnmDZJTIAfwTs0g68UZHvtc",
    "dp": "ZK-YwE7diUh0qR1tR7w8WHtolDx3MZ_OTowiFvgfeQ3SiresXjm9gZ5KLhMXvo-uz"
          "-KUJWDxS5pFQ_M0evdo1dKiRTjVw_x4NyqyXPM5nULPkcpU827rnpZzAJKpdhWAgqr"
          "XGKAECQH0Xt4taznjnd_zVpAmZZq60WPMBMfKcuE",
    "dq": "Dq0gfgJ1DdFGXiLvQEZnuKEN0UUmsJBxkjydc3j4ZYdBiMRAy86x0vHCjywcMlYYg4"
          "yoC4YZa9hNVcsjqA3FeiL19rk8g6Qn29Tt0cj8qqyFpz9vNDBUfCAiJVeESOjJDZPY"
          "HdHY8v1b-o-Z2X5tvLx-TCekf7oxyeKDUqKWjis",
    "qi": "VIMpMYbPf47dT1w_zDUXfPimsSegnMOA1zTaX7aGk_8urY6R8-ZW1FxU7AlWAyLWyb"
          "qq6t16VFd7hQd0y6flUK4SlOydB61gwanOsXGOAOv82cHq0E3eL4HrtZkUuKvnPrMn"
          "sUUFlfUdybVzxyjz9JF_XyaY14ardLSjf4L_FNY",
}
A1 = (
    "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ."
    "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGeipsEdY"
    "3mx_etLbbWSrFr05kLzcSr4qKAq7YN7e9jwQRb23nfa6c9d-StnImGyFDbSv04uVuxIp5Z"
    "ms1gNxKKK2Da14B8S4rzVRltdYwam_lDp5XnZAYpQdb76FdIKLaVmqgfwX7XWRxv2322i-"
    "vDxRfqNzo_tETKzpVLzfiwQyeyPGLBIO56YJ7eObdv0je81860ppamavo35UgoRdbYaBco"
    "h9QcfylQr66oc6vFWXRcZ_ZT2LawVCWTIy3brGPi6UklfCpIMfIjf7iGdXKHzg."
    "48V1_ALb6US04U3b."
    "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6jiSdiwkI"
    "r3ajwQzaBtQD_A."
    "XFBoMYUZodetZdvTiFvSkQ")
A1_PLAINTEXT = ("The true sign of intelligence is not knowledge but "
                "imagination.")

# -- RFC 7520 section 5.2: RSA-OAEP, A256GCM, a 4096-bit key ---------------

SAMWISE = {
    "kty": "RSA",
    "kid": "samwise.gamgee@hobbiton.example",
    "use": "enc",
    "alg": "RSA-OAEP",
    "n": "wbdxI55VaanZXPY29Lg5hdmv2XhvqAhoxUkanfzf2-5zVUxa6prHRrI4pP1AhoqJRl"
         "ZfYtWWd5mmHRG2pAHIlh0ySJ9wi0BioZBl1XP2e-C-FyXJGcTy0HdKQWlrfhTm42EW7"
         "Vv04r4gfao6uxjLGwfpGrZLarohiWCPnkNrg71S2CuNZSQBIPGjXfkmIy2tl_VWgGnL"
         "22GplyXj5YlBLdxXp3XeStsqo571utNfoUTU8E4qdzJ3U1DItoVkPGsMwlmmnJiwA7s"
         "XRItBCivR4M5qnZtdw-7v4WuR4779ubDuJ5nalMv2S66-RPcnFAzWSKxtBDnFJJDGIU"
         "e7Tzizjg1nms0Xq_yPub_UOlWn0ec85FCft1hACpWG8schrOBeNqHBODFskYpUc2LC5"
         "JA2TaPF2dA67dg1TTsC_FupfQ2kNGcE1LgprxKHcVWYQb86B-HozjHZcqtauBzFNV5t"
         "bTuB-TpkcvJfNcFLlH3b8mb-H_ox35FjqBSAjLKyoeqfKTpVjvXhd09knwgJf6VKq6U"
         "C418_TOljMVfFTWXUxlnfhOOnzW6HSSzD1c9WrCuVzsUMv54szidQ9wf1cYWf3g5qFD"
         "xDQKis99gcDaiCAwM3yEBIzuNeeCa5dartHDb1xEB_HcHSeYbghbMjGfasvKn0aZRsn"
         "TyC0xhWBlsolZE",
    "e": "AQAB",
    "d": "n7fzJc3_WG59VEOBTkayzuSMM780OJQuZjN_KbH8lOZG25ZoA7T4Bxcc0xQn5oZE5u"
         "SCIwg91oCt0JvxPcpmqzaJZg1nirjcWZ-oBtVk7gCAWq-B3qhfF3izlbkosrzjHajIc"
         "Y33HBhsy4_WerrXg4MDNE4HYojy68TcxT2LYQRxUOCf5TtJXvM8olexlSGtVnQnDRut"
         "xEUCwiewfmmrfveEogLx9EA-KMgAjTiISXxqIXQhWUQX1G7v_mV_Hr2YuImYcNcHkRv"
         "p9E7ook0876DhkO8v4UOZLwA1OlUX98mkoqwc58A_Y2lBYbVx1_s5lpPsEqbbH-nqIj"
         "h1fL0gdNfihLxnclWtW7pCztLnImZAyeCWAG7ZIfv-Rn9fLIv9jZ6r7r-MSH9sqbuzi"
         "HN2grGjD_jfRluMHa0l84fFKl6bcqN1JWxPVhzNZo01yDF-1LiQnqUYSepPf6X3a2SO"
         "dkqBRiquE6EvLuSYIDpJq3jDIsgoL8Mo1LoomgiJxUwL_GWEOGu28gplyzm-9Q0U0ny"
         "hEf1uhSR8aJAQWAiFImWH5W_IQT9I7-yrindr_2fWQ_i1UgMsGzA7aOGzZfPljRy6z-"
         "tY_KuBG00-28S_aWvjyUc-Alp8AUyKjBZ-7CWH32fGWK48j1t-zomrwjL_mnhsPbGs0"
         "c9WsWgRzI-K8gE",
    "p": "7_2v3OQZzlPFcHyYfLABQ3XP85Es4hCdwCkbDeltaUXgVy9l9etKghvM4hRkOvbb01"
         "kYVuLFmxIkCDtpi-zLCYAdXKrAK3PtSbtzld_XZ9nlsYa_QZWpXB_IrtFjVfdKUdMz9"
         "4pHUhFGFj7nr6NNxfpiHSHWFE1zD_AC3mY46J961Y2LRnreVwAGNw53p07Db8yD_92p"
         "Da97vqcZOdgtybH9q6uma-RFNhO1AoiJhYZj69hjmMRXx-x56HO9cnXNbmzNSCFCKnQ"
         "mn4GQLmRj9sfbZRqL94bbtE4_e0Zrpo8RNo8vxRLqQNwIy85fc6BRgBJomt8QdQvIgP"
         "gWCv5HoQ",
    "q": "zqOHk1P6WN_rHuM7ZF1cXH0x6RuOHq67WuHiSknqQeefGBA9PWs6ZyKQCO-O6mKXtc"
         "gE8_Q_hA2kMRcKOcvHil1hqMCNSXlflM7WPRPZu2qCDcqssd_uMbP-DqYthH_EzwL9K"
         "nYoH7JQFxxmcv5An8oXUtTwk4knKjkIYGRuUwfQTus0w1NfjFAyxOOiAQ37ussIcE6C"
         "6ZSsM3n41UlbJ7TCqewzVJaPJN5cxjySPZPD3Vp01a9YgAD6a3IIaKJdIxJS1ImnfPe"
         "vSJQBE79-EXe2kSwVgOzvt-gsmM29QQ8veHy4uAqca5dZzMs7hkkHtw1z0jHV90epQJ"
         "JlXXnH8Q",
    "dp": "19oDkBh1AXelMIxQFm2zZTqUhAzCIr4xNIGEPNoDt1jK83_FJA-xnx5kA7-1erdHd"
          "ms_Ef67HsONNv5A60JaR7w8LHnDiBGnjdaUmmuO8XAxQJ_ia5mxjxNjS6E2yD44USo"
          "2JmHvzeeNczq25elqbTPLhUpGo1IZuG72FZQ5gTjXoTXC2-xtCDEUZfaUNh4IeAipfL"
          "ugbpe0JAFlFfrTDAMUFpC3iXjxqzbEanflwPvj6V9iDSgjj8SozSM0dLtxvu0LIeIQA"
          "eEgT_yXcrKGmpKdSO08kLBx8VUjkbv_3Pn20Gyu2YEuwpFlM_H1NikuxJNKFGmnAq9L"
          "cnwwT0jvoQ",
    "dq": "S6p59KrlmzGzaQYQM3o0XfHCGvfqHLYjCO557HYQf72O9kLMCfd_1VBEqeD-1jjwE"
          "LKDjck8kOBl5UvohK1oDfSP1DleAy-cnmL29DqWmhgwM1ip0CCNmkmsmDSlqkUXDi6s"
          "AaZuntyukyflI-qSQ3C_BafPyFaKrt1fgdyEwYa08pESKwwWisy7KnmoUvaJ3SaHmoh"
          "FS78TJ25cfc10wZ9hQNOrIChZlkiOdFCtxDqdmCqNacnhgE3bZQjGp3n83ODSz9zwJc"
          "SUvODlXBPc2AycH6Ci5yjbxt4Ppox_5pjm6xnQkiPgj01GpsUssMmBN7iHVsrE7N2iz"
          "nBNCeOUIQ",
    "qi": "FZhClBMywVVjnuUud-05qd5CYU0dK79akAgy9oX6RX6I3IIIPckCciRrokxglZn-o"
          "mAY5CnCe4KdrnjFOT5YUZE7G_Pg44XgCXaarLQf4hl80oPEf6-jJ5Iy6wPRx7G2e8q"
          "Lxnh9cOdf-kRqgOS3F48Ucvw3ma5V6KGMwQqWFeV31XtZ8l5cVI-I3NzBS7qltpUVgz"
          "2Ju021eyc7IlqgzR98qKONl27DuEES0aK0WE97jnsyO27Yp88Wa2RiBrEocM89QZI1s"
          "eJiGDizHRUP4UZxw9zsXww46wy0P6f9grnYp7t8LkyDDk8eoI4KX6SNMNVcyVS9IWjl"
          "q8EzqZEKIA",
}
RFC7520_5_2 = (
    "eyJhbGciOiJSU0EtT0FFUCIsImtpZCI6InNhbXdpc2UuZ2FtZ2VlQGhvYmJpdG9uLmV4YW"
    "1wbGUiLCJlbmMiOiJBMjU2R0NNIn0."
    "rT99rwrBTbTI7IJM8fU3Eli7226HEB7IchCxNuh7lCiud48LxeolRdtFF4nzQibeYOl5S_"
    "PJsAXZwSXtDePz9hk-BbtsTBqC2UsPOdwjC9NhNupNNu9uHIVftDyucvI6hvALeZ6OGnhN"
    "V4v1zx2k7O1D89mAzfw-_kT3tkuorpDU-CpBENfIHX1Q58-Aad3FzMuo3Fn9buEP2yXakL"
    "XYa15BUXQsupM4A1GD4_H4Bd7V3u9h8Gkg8BpxKdUV9ScfJQTcYm6eJEBz3aSwIaK4T3-d"
    "wWpuBOhROQXBosJzS1asnuHtVMt2pKIIfux5BC6huIvmY7kzV7W7aIUrpYm_3H4zYvyMeq"
    "5pGqFmW2k8zpO878TRlZx7pZfPYDSXZyS0CfKKkMozT_qiCwZTSz4duYnt8hS4Z9sGthXn"
    "9uDqd6wycMagnQfOTs_lycTWmY-aqWVDKhjYNRf03NiwRtb5BE-tOdFwCASQj3uuAgPGrO"
    "2AWBe38UjQb0lvXn1SpyvYZ3WFc7WOJYaTa7A8DRn6MC6T-xDmMuxC0G7S2rscw5lQQU06"
    "MvZTlFOt0UvfuKBa03cxA_nIBIhLMjY2kOTxQMmpDPTr6Cbo8aKaOnx6ASE5Jx9paBpnNm"
    "OOKH35j_QlrQhDWUN6A2Gg8iFayJ69xDEdHAVCGRzN3woEI2ozDRs."
    "-nBoKLH0YkLZPSI9."
    "o4k2cnGN8rSSw3IDo1YuySkqeS_t2m1GXklSgqBdpACm6UJuJowOHC5ytjqYgRL-I-soPl"
    "wqMUf4UgRWWeaOGNw6vGW-xyM01lTYxrXfVzIIaRdhYtEMRBvBWbEwP7ua1DRfvaOjgZv6"
    "Ifa3brcAM64d8p5lhhNcizPersuhw5f-pGYzseva-TUaL8iWnctc-sSwy7SQmRkfhDjwbz"
    "0fz6kFovEgj64X1I5s7E6GLp5fnbYGLa1QUiML7Cc2GxgvI7zqWo0YIEc7aCflLG1-8Bbo"
    "VWFdZKLK9vNoycrYHumwzKluLWEbSVmaPpOslY2n525DxDfWaVFUfKQxMF56vn4B9QMpWA"
    "bnypNimbM8zVOw."
    "UCGiqJxhBI3IFVdPalHHvA")

# -- RFC 7520 section 5.7: A256GCMKW, A128CBC-HS256 ------------------------

GCMKW_KEY = {"kty": "oct", "kid": "18ec08e1-bfa9-4d95-b205-2b4dd1d4321d",
             "use": "enc", "alg": "A256GCMKW",
             "k": "qC57l_uxcm7Nm3K-ct4GFjx8tM1U8CZ0NLBvdQstiS8"}
RFC7520_5_7 = (
    "eyJhbGciOiJBMjU2R0NNS1ciLCJraWQiOiIxOGVjMDhlMS1iZmE5LTRkOTUtYjIwNS0yYj"
    "RkZDFkNDMyMWQiLCJ0YWciOiJrZlBkdVZRM1QzSDZ2bmV3dC0ta3N3IiwiaXYiOiJLa1lU"
    "MEdYXzJqSGxmcU5fIiwiZW5jIjoiQTEyOENCQy1IUzI1NiJ9."
    "lJf3HbOApxMEBkCMOoTnnABxs_CvTWUmZQ2ElLvYNok."
    "gz6NjyEFNm_vm8Gj6FwoFQ."
    "Jf5p9-ZhJlJy_IQ_byKFmI0Ro7w7G1QiaZpI8OaiVgD8EqoDZHyFKFBupS8iaEeVIgMqWm"
    "suJKuoVgzR3YfzoMd3GxEm3VxNhzWyWtZKX0gxKdy6HgLvqoGNbZCzLjqcpDiF8q2_62EV"
    "Abr2uSc2oaxFmFuIQHLcqAHxy51449xkjZ7ewzZaGV3eFqhpco8o4DijXaG5_7kp3h2caj"
    "RfDgymuxUbWgLqaeNQaJtvJmSMFuEOSAzw9Hdeb6yhdTynCRmu-kqtO5Dec4lT2OMZKpnx"
    "c_F1_4yDJFcqb5CiDSmA-psB2k0JtjxAj4UPI61oONK7zzFIu4gBfjJCndsZfdvG7h8wGj"
    "V98QhrKEnR7xKZ3KCr0_qR1B-gxpNk3xWU."
    "DKW7jrb4WaRSNfbXVPlT5g")

FRODO = ("You can trust us to stick with you through thick and thin\u2013to "
         "the bitter end. And you can trust us to keep any secret of "
         "yours\u2013closer than you keep it yourself. But you cannot trust "
         "us to let you face trouble alone, and go off without a word. We "
         "are your friends, Frodo.")

VECTORS = [
    ("RFC 7516 A.1", A1, A1_KEY, A1_PLAINTEXT),
    ("RFC 7520 5.2", RFC7520_5_2, SAMWISE, FRODO),
    ("RFC 7520 5.7", RFC7520_5_7, GCMKW_KEY, FRODO),
]


def rsa_private(jwk):
    i = {m: int.from_bytes(U.b64d(jwk[m]), "big")
         for m in ("n", "e", "d", "p", "q", "dp", "dq", "qi")}
    pub = rsa.RSAPublicNumbers(i["e"], i["n"])
    return rsa.RSAPrivateNumbers(i["p"], i["q"], i["d"], i["dp"], i["dq"],
                                 i["qi"], pub).private_key()


def reference_decrypt(tok, jwk):
    """RFC 7516 section 5.2 for the three vectors' algorithms, from
    python3-cryptography primitives: the plaintext, or an exception."""
    p = tok.split(".")
    h = json.loads(U.b64d(p[0]))
    ek, iv, ct, tag = (U.b64d(s) for s in p[1:])
    if h["alg"] == "RSA-OAEP":
        cek = rsa_private(jwk).decrypt(
            ek, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(),
                             None))
    else:
        assert h["alg"] == "A256GCMKW"
        cek = AESGCM(U.b64d(jwk["k"])).decrypt(
            U.b64d(h["iv"]), ek + U.b64d(h["tag"]), None)
    aad = p[0].encode()
    if h["enc"] == "A256GCM":
        return AESGCM(cek).decrypt(iv, ct + tag, aad).decode()
    assert h["enc"] == "A128CBC-HS256"
    m = hmac_p.HMAC(cek[:16], hashes.SHA256())
    m.update(aad + iv + ct + (len(aad) * 8).to_bytes(8, "big"))
    assert constant_time.bytes_eq(m.finalize()[:16], tag)
    d = Cipher(algorithms.AES(cek[16:]), modes.CBC(iv)).decryptor()
    u = sym_padding.PKCS7(128).unpadder()
    return (u.update(d.update(ct) + d.finalize()) + u.finalize()).decode()


@pytest.mark.parametrize("name,tok,jwk,plaintext", VECTORS,
                         ids=[v[0] for v in VECTORS])
def test_vector_transcribed_intact(name, tok, jwk, plaintext):
    assert reference_decrypt(tok, jwk) == plaintext


CONF = U.BACKEND_CONF + """\
    server {
        listen 127.0.0.1:{{port}};
        add_header X-Result $auth_jwt_result always;
        add_header X-Sub $jwt_claim_sub always;
        auth_jwt "api";
        auth_jwt_key_file {{keys}};
        location /rfc/ {
            auth_jwt_type encrypted;
            auth_jwt_key_file {{rfc}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /enc/ {
            auth_jwt_type encrypted;
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /signed/ {
            proxy_pass http://127.0.0.1:{{port1}};
        }
        location /sig-only/ {
            auth_jwt_type encrypted;
            auth_jwt_key_file {{sigkeys}};
            proxy_pass http://127.0.0.1:{{port1}};
        }
    }
"""


def secret(kid):
    """A 256-bit oct key of its own for each kid."""
    return bytes((sum(map(ord, kid)) + 13 * i) % 256 for i in range(32))


def oct_jwk(kid, **marks):
    return dict({"kty": "oct", "kid": kid, "k": U.b64u(secret(kid))},
                **marks)


# what each key is marked for; all are 256-bit oct keys, which would
# serve both HMAC and every 256-bit JWE algorithm without marks
SIG_ONLY = [oct_jwk("use-sig", use="sig"),
            oct_jwk("ops-verify", key_ops=["verify"]),
            oct_jwk("alg-hs256", alg="HS256")]
ENC_KEYS = [oct_jwk("alg-a256kw", alg="A256KW"),
            oct_jwk("ops-unwrap", key_ops=["unwrapKey"]),
            oct_jwk("ops-decrypt", key_ops=["decrypt"]),
            oct_jwk("use-enc", use="enc"),
            oct_jwk("unmarked"),
            # a JWE "alg" its key is too long for: skipped with a warn
            oct_jwk("alg-a128kw", alg="A128KW"),
            # "use":"sig" and "key_ops":["decrypt"]: for nothing
            oct_jwk("use-sig-ops-decrypt", use="sig", key_ops=["decrypt"])]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    return str(path)


@pytest.fixture
def n(nginx, tmp_path):
    os.chmod(str(tmp_path), 0o755)
    rfc = write(tmp_path / "rfc.json", U.jwks(A1_KEY, SAMWISE, GCMKW_KEY))
    keys = write(tmp_path / "keys.json", U.jwks(*(SIG_ONLY + ENC_KEYS)))
    sigkeys = write(tmp_path / "sig.json", U.jwks(*SIG_ONLY))
    return nginx.start(CONF, modules=MOD, rfc=rfc, keys=keys,
                       sigkeys=sigkeys)


def get(n, tok, path):
    return requests.get(n.url(path), timeout=30,
                        headers={"Authorization": "Bearer " + tok})


def flip_tag(tok):
    p = tok.split(".")
    tag = bytearray(U.b64d(p[4]))
    tag[-1] ^= 1
    return ".".join(p[:4] + [U.b64u(bytes(tag))])


def test_published_vectors_decrypt(n):
    """The three plaintexts are text, not claims: a token that decrypts
    and passes its tag reads "malformed" with the plaintext reason; one
    bit off in its tag, it is not authentic (one reason for every
    decryption failure)."""
    for name, tok, _, _ in VECTORS:
        n.mark()
        r = get(n, tok, "/rfc/x")
        assert r.status_code == 401, name
        assert r.headers["X-Result"] == "malformed", name
        log = n.log_since_mark()
        assert "JWE plaintext is not a JSON object" in log, (name, log)
        assert "JWE decryption failed" not in log, name
        n.mark()
        r = get(n, flip_tag(tok), "/rfc/x")
        assert r.status_code == 401, name
        assert r.headers["X-Result"] == "bad_signature", name
        assert "JWE decryption failed" in n.log_since_mark(), name


def test_published_keys_decrypt_our_tokens(n):
    """The published keys, as the key file holds them, also open tokens
    with claims (the RFC 7516 A.1 key has no "kid" and so is a candidate
    for any token; 5.2's key is named by its "kid")."""
    cases = [("RSA-OAEP", "A256GCM", "a1", None),
             ("RSA-OAEP-256", "A128CBC-HS256", "a1", None),
             ("RSA-OAEP", "A256GCM", "samwise", SAMWISE["kid"])]
    # U.jwe encrypts to the public half of a key in U's session cache
    U._cache["rfc-a1"] = rsa_private(A1_KEY)
    U._cache["rfc-samwise"] = rsa_private(SAMWISE)
    for alg, enc, who, kid in cases:
        tok = U.jwe(U.claims(sub=who), alg, enc, keyname="rfc-" + who,
                    kid=kid)
        r = get(n, tok, "/rfc/x")
        assert r.status_code == 200, (alg, enc, who, r.headers)
        assert r.headers["X-Sub"] == who
    tok = U.jwe(U.claims(sub="gcmkw"), "A256GCMKW", "A256GCM",
                secret=U.b64d(GCMKW_KEY["k"]), kid=GCMKW_KEY["kid"])
    assert get(n, tok, "/rfc/x").headers["X-Sub"] == "gcmkw"


def jwe_for(kid, alg="dir", enc="A256GCM", with_kid=True):
    """A JWE made with the key of kid: only that key's marks can stop
    it from decrypting."""
    return U.jwe(U.claims(sub=kid), alg, enc, secret=secret(kid),
                 kid=kid if with_kid else None)


def hs256_for(kid):
    return U.token("HS256", U.claims(sub=kid), secret=secret(kid), kid=kid)


def test_keys_marked_for_signatures_never_decrypt(n):
    for k in SIG_ONLY:
        kid = k["kid"]
        # the key itself works, for signatures
        r = get(n, hs256_for(kid), "/signed/x")
        assert r.status_code == 200, (kid, r.headers)
        assert r.headers["X-Sub"] == kid
        # but no JWE made with it is opened, whatever its "alg"
        for alg in ("dir", "A256KW", "A256GCMKW"):
            n.mark()
            r = get(n, jwe_for(kid, alg), "/enc/x")
            assert r.status_code == 401, (kid, alg)
            assert r.headers["X-Result"] == "no_key", (kid, alg)
            assert "access denied (no_key): no key matches the token's " \
                "\"kid\" and \"alg\"" in n.log_since_mark()
    # without a "kid" every key is a candidate: a set of signature keys
    # has none for a JWE, even made with one of them
    for k in SIG_ONLY:
        r = get(n, jwe_for(k["kid"], with_kid=False), "/sig-only/x")
        assert r.status_code == 401, k
        assert r.headers["X-Result"] == "no_key", k


def test_keys_marked_for_jwe_decrypt_and_never_verify(n):
    opens = {
        # key_ops decrypt/unwrapKey, use enc, no marks: every 256-bit alg
        "ops-unwrap": ("dir", "A256KW", "A256GCMKW"),
        "ops-decrypt": ("dir", "A256KW", "A256GCMKW"),
        "use-enc": ("dir", "A256KW", "A256GCMKW"),
        "unmarked": ("dir", "A256KW", "A256GCMKW"),
        # a key management "alg" binds the key to it
        "alg-a256kw": ("A256KW",),
    }
    for kid, algs in opens.items():
        for alg in ("dir", "A256KW", "A256GCMKW"):
            r = get(n, jwe_for(kid, alg), "/enc/x")
            if alg in algs:
                assert r.status_code == 200, (kid, alg, r.headers)
                assert r.headers["X-Sub"] == kid
            else:
                assert r.headers["X-Result"] == "no_key", (kid, alg)
    # only unmarked keys (and "use":"sig" ones) verify signatures
    for kid in opens:
        r = get(n, hs256_for(kid), "/signed/x")
        if kid == "unmarked":
            assert r.status_code == 200
        else:
            assert r.headers["X-Result"] == "no_key", kid
    # a key for nothing, and one whose JWE "alg" does not fit it
    for kid in ("use-sig-ops-decrypt", "alg-a128kw"):
        assert get(n, jwe_for(kid), "/enc/x").headers["X-Result"] == \
            "no_key", kid
        assert get(n, hs256_for(kid), "/signed/x").headers["X-Result"] == \
            "no_key", kid
    assert re.search(r'\[warn\].*key #\d+ \(kid "alg-a128kw"\) skipped: '
                     r'JWK "alg" does not fit its key', n.logs())
    assert "use-sig-ops-decrypt" not in n.logs()
