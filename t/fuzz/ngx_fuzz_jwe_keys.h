
/* written by t/fuzz/seeds.py: the keys that decrypt the jwe seeds */

#define NGX_FUZZ_JWE_KEYS                                              \
    "{\"keys\": [{\"kty\": \"oct\", \"kid\": \"w\", \"use\": \"enc\", \"alg\": \"A128K" \
    "W\", \"k\": \"AAECAwQFBgcICQoLDA0ODw\"}, {\"kty\": \"oct\", \"kid\": \"c\", \"" \
    "use\": \"enc\", \"k\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8\"}" \
    ", {\"kty\": \"RSA\", \"kid\": \"o\", \"use\": \"enc\", \"n\": \"lLxUcKdzlZU5vK4" \
    "-uShRjRmvBvw8YgPvnskeRFqKIBLQdqZbiP5WvujJ4nWhYtUMRIE3JKwahEttx61" \
    "kL8TF4Fhz2CKTV7ZzomRvQhvUXOg1b7IgVgbGMgwD1hEuwwXePCqfKs5wx9a3dQ1" \
    "rWN2uzm8MyGw8tqGF02AHVmyTjgatyjL8Cyyzryl6RnQ_jARjujUyskcamZNJuX_" \
    "MTPZanwZWkhX9GblM8KdKo-T3bANAHHb7FadCSlt57MFEYrVhPCPvUa7rCx3DjC0" \
    "_MXF4PEfwbH5tGEVHC0ZKJDA0kGhTzPAHR-2lZxcddr8aVD_0qNRYCQPGWhjv0yO" \
    "3Z5Uvxw\", \"e\": \"AQAB\", \"d\": \"3xmfj1ueBMHR2TOE4jeYHA5qfA_egydkRsl" \
    "mnSEyDuopx8_BfbwEYljMeuP3MEhiHl-0V03QeKCsCtgLb5u5NMt4-LrkSK1kxjH" \
    "gsUkNQk8N2H1YA7IlmOxs1Kzxd5dVwuor1gnTIe7xQKLgYmwjyYLJqdixOUEPfAC" \
    "PARPcQSt6GfJDXlcssW1qu8274aiPCpcFMGYFaWEA2mwY9u9ubAyfjJp7H7qkzw2" \
    "UussupS079D_qpzdVXyzh-mxU8dWIUcrHledrpTdPf-xPxk_WZKDGIy3D1cLOeEb" \
    "xBOwNW-H6H0kCXA8YzBNcHNvpgXxbt8vwAQ3qKzT0AAncvIAB\", \"p\": \"xLRTJi" \
    "9q6x3rEU1DglK5mLamTIKL1YPp6qgtLvHXPZBjt5l9etJeFjV8JAPpgvxanh-6rN" \
    "BoQyhR_D06LWmIpn6Q-xkJ2htpzcCoAquRL2BynWqU3XzmTD0976S72_qYjzKfem" \
    "-6_tXGMXUBBJEDvO2Rcs0edrzkHXuFvQwV4YE\", \"q\": \"wZJCQlCwFouCVjMLGB" \
    "myf-F1hlVzy-C6bZRfUG5u2XxQlz0cfSCMs7S0OW-7g3oWC-ZpuasoVr2yp5VS4g" \
    "-7E_iw402FupHx_VFdXLl14GOF4SnxoEOv4qakvveLobswNe7OdmonA1SI0TbuEY" \
    "T4Tu3TIAiRXXcgEt70vIHsJUc\", \"dp\": \"qAaZWG781-ZwnBDx7-sWWxr6pzSEm" \
    "ljagfYy0n0HLbGfXIAirb3xXOtHJcSpvZgvGA9meKR1y5gvoFX00kHp1r8avUNAJ" \
    "S1xja5aVh2UIXIztcALdb9xQgK2W3TOfDRuCTRnAkFa7MBTUn_t5KazGLmemwAYW" \
    "7ky6vRO45PlRQE\", \"dq\": \"HnLoU1An8tPtI6wR0a-xIWaQuxnUBj0KdlRBjgBh" \
    "FXr1nmSxh4lIOLhzJRnLUEozD5omBVvEE6jxYmUdzYuV7PVQteCq6YctnqBe5EgU" \
    "H8Dn_VxAsuoSz79Q6O09nKo6UjGHbp8SFfcFMovGdSEKgjfs3vwaCa7Eb9N8ge6Z" \
    "-98\", \"qi\": \"D4KH7BNUAV37wJ4F9-n2ftOX_W6I7pIdhi0mRTlzs69Vpc5a5MZ" \
    "wA3crkRHbcsitggjegekABLH37YktzS7BXVOfAZ2cK_4h1xp68OTpGzyYRvfQT4g" \
    "YMS10IHYTpPeu5orDvcrrFlqGUw8RS6pjLAcVnUd0EbwjE-Hgfb5aVxY\"}, {\"kt" \
    "y\": \"oct\", \"k\": \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISI" \
    "jJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0-Pw\", \"kid\": \"h\"}]}"
