"""The realm argument of auth_key and auth_introspect: one grammar (the
common ngx_meshgate_realm_conf()), the same errors from both."""

import pytest

from harness import require_module

DIRECTIVES = [
    ("auth_key", "auth_key", ""),
    ("auth_introspect", "auth_introspect",
     " auth_introspect_endpoint /i;"),
]

BAD = [
    # a quote, a backslash or a control byte cannot go into a challenge
    ('%s "a\\"b";', r'invalid character in realm "a"b"'),
    ('%s "a\\\\b";', r"invalid character in realm"),
    ('%s "a\\tb";', r"invalid character in realm"),
    ("%s a; %s b;", r"is duplicate"),
    ("%s off; %s b;", r"is duplicate"),
]


@pytest.mark.parametrize("module,directive,extra", DIRECTIVES,
                         ids=[d[0] for d in DIRECTIVES])
@pytest.mark.parametrize("snippet,expect", BAD)
def test_bad_realm_fails_nginx_t(nginx_t, module, directive, extra,
                                 snippet, expect):
    require_module(module)
    line = snippet.replace("%s", directive) + extra
    nginx_t("server { listen 127.0.0.1:{{port}}; location / { %s } }"
            % line, modules=[module], expect=expect)


@pytest.mark.parametrize("module,directive,extra", DIRECTIVES,
                         ids=[d[0] for d in DIRECTIVES])
@pytest.mark.parametrize("realm", ["off", "api", '"meshgate demo"'])
def test_good_realm_passes_nginx_t(nginx_t, module, directive, extra,
                                   realm):
    require_module(module)
    rc, out = nginx_t("server { listen 127.0.0.1:{{port}}; location / {"
                      " %s %s;%s } }" % (directive, realm, extra),
                      modules=[module])
    assert rc == 0, out


def test_introspect_off_takes_nothing_after(nginx_t):
    require_module("auth_introspect")
    nginx_t("server { listen 127.0.0.1:{{port}}; location / {"
            " auth_introspect off token=$arg_t; } }",
            modules=["auth_introspect"], expect=r"takes no parameters")
