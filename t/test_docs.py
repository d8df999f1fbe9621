"""The README documents every directive the modules declare."""

import glob
import os
import re

from harness import TOP


def directives_in(text):
    """Names in the ngx_command_t arrays of a C source."""
    names = set()
    for block in re.findall(r"ngx_command_t\s+\w+\[\]\s*=\s*\{(.*?)\n\};",
                            text, re.S):
        names.update(re.findall(r'\{\s*ngx_string\("([a-z0-9_]+)"\)', block))
    return names


def declared_directives():
    names = set()
    for path in glob.glob(os.path.join(TOP, "modules", "*", "*.c")):
        names |= directives_in(open(path).read())
    return names


def test_every_directive_is_in_the_readme():
    readme = open(os.path.join(TOP, "README.md")).read()
    missing = sorted(d for d in declared_directives()
                     if not re.search(r"`%s[` ]" % re.escape(d), readme))
    assert not missing, "undocumented directives: %s" % missing


def test_directive_scan_finds_directives():
    # The scan itself must see a command array, or the test above is empty.
    sample = '''static ngx_command_t  ngx_http_x_commands[] = {

    { ngx_string("x_on"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG, NULL, 0, 0, NULL },

      ngx_null_command
};'''
    assert directives_in(sample) == {"x_on"}
