"""nginx -t on an example config from config/, with the modules built here.

Usage: python3 t/configcheck.py config/gateway.conf
The config runs in a temporary prefix whose modules/ links to the build;
relative paths in it resolve against config/ as they do for users.
"""

import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("MESHGATE_BUILD",
                                       os.path.join(TOP, "build")))


def make_prefix(conf):
    """A prefix dir: modules -> build/modules, logs/, temp/, and the
    config copied next to config/'s demo data."""
    prefix = tempfile.mkdtemp(prefix="meshgate-conf-")
    os.symlink(os.path.join(BUILD, "modules"),
               os.path.join(prefix, "modules"))
    for d in ("logs", "temp"):
        os.makedirs(os.path.join(prefix, d))
    return prefix


def check(conf):
    conf = os.path.abspath(conf)
    prefix = make_prefix(conf)
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from harness import sanitizer_env  # LD_PRELOAD for an ASan build
        p = subprocess.run(["/usr/sbin/nginx", "-t", "-p", prefix + "/",
                            "-c", conf, "-e", "stderr"],
                           capture_output=True, text=True,
                           env=sanitizer_env(leaks=False))
        sys.stdout.write(p.stdout + p.stderr)
        return p.returncode
    finally:
        shutil.rmtree(prefix)


if __name__ == "__main__":
    sys.exit(check(sys.argv[1]))
