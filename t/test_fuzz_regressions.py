"""Every input the fuzzing harnesses found a bug with (t/fuzz/crashes/
<target>-<what>) runs once through its harness (scripts/fuzz --run): none
may fail any more.  A bug still open is marked xfail(strict=True) with
its name: the mark goes when the fix lands (a strict xfail that passes
fails the suite)."""

import glob
import os
import shutil
import subprocess

import pytest

from harness import TOP

CRASHES = sorted(glob.glob(os.path.join(TOP, "t", "fuzz", "crashes", "*")))
FUZZ = os.path.join(TOP, "scripts", "fuzz")

# reproducer -> the bug it shows, while that bug is open.  Those found so
# far are fixed: jwt: an absent claim read as the last member; redis: a
# 16 GiB calloc for "*2147483647"; label: "\xec\xec\xec" taken as UTF-8;
# redis_cluster: a refused CLUSTER SLOTS applied in part or filling the
# node table, 0.0.0.0 taken as a node or the primary, ASKING held as a
# handshake (a silent node kept its connection "opening" for good), a
# discovery under way at exit cancelled after the sentinels' client had
# freed it.
OPEN = {
}


def target(path):
    return os.path.basename(path).split("-", 1)[0]


def cases():
    for path in CRASHES:
        name = os.path.basename(path)
        marks = []
        if name in OPEN:
            marks.append(pytest.mark.xfail(strict=True, reason=OPEN[name]))
        yield pytest.param(path, id=name, marks=marks)


@pytest.fixture(scope="module")
def harnesses():
    if os.environ.get("MESHGATE_ASAN"):
        pytest.skip("the harnesses run under ASan already (normal run)")
    if shutil.which("clang") is None:
        pytest.skip("no clang: scripts/fuzz cannot build the harnesses")
    targets = sorted({target(p) for p in CRASHES})
    p = subprocess.run([FUZZ, "--build"] + targets, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("path", cases())
def test_reproducer_passes(harnesses, path):
    p = subprocess.run([FUZZ, "--run", target(path), path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
