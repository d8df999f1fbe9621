
/* written by t/fuzz/seeds.py: the public keys that signed the jwt seeds */

#define NGX_FUZZ_JWT_KEYS                                              \
    "{\"keys\": [{\"kty\": \"oct\", \"k\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXG" \
    "BkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw\", \"kid\": \"" \
    "h\"}, {\"kty\": \"RSA\", \"n\": \"lKeWuqPKhVtKQIv320cdPwnse0PqYdzMA44k-y" \
    "sBucYoOd9igD4fIzV-cat4fQelPrxXSPqkEkHS3IJ22euBy-i2GkOdFM398YxLVT" \
    "RrCa-lTrluRwVF50vSNQJS82Lioleys1pnxRY2NsDWL8NeDRcAffrMusY-mrJMhp" \
    "pVHAIWdkQOGgU0KYNm9bB-bb_gEHm8bDkrVoQJ2FAm90eDMdu2Rg-ss-iOtWo2gd" \
    "2UbM7HkIBOBebDrsile2UhAl0uytTWB26TNsI0y2rlcIcfsT7l0CdEXW8lwJcmqy" \
    "shd7PZcXHmLZUM_OACHtDdJmYzQn5HcA0I5P62XsR5ak7_CQ\", \"e\": \"AQAB\", " \
    "\"kid\": \"r\"}, {\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"R0KOM1S3AvNaEnE" \
    "8tkQZP5yginBJlzbQFPTZeDF6mKo\", \"y\": \"I7P6zvnTa_dRN89KhN1SgFN3L-3" \
    "tD1RNdrzRyBg5E7E\", \"kid\": \"e\"}, {\"kty\": \"OKP\", \"crv\": \"Ed25519\"," \
    " \"x\": \"jv_3-aBLSgFk977sST1QBXtUK_nXs2R7gAVtpOzJKU4\", \"kid\": \"d\"}" \
    "]}"
