"""Helpers for the mesh_metrics tests: a Prometheus text parser, promtool,
and W3C traceparent checks."""

import re
import subprocess

import requests

from conftest import wait_for

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TRACEPARENT = re.compile(
    r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def unescape(v):
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n"
                  else m.group(1), v)


def parse(text):
    """Samples of a Prometheus text exposition: [(name, labels, value)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line: %r" % line
        labels = {k: unescape(v) for k, v in LABEL.findall(m.group(2) or "")}
        out.append((m.group(1), labels, float(m.group(3))))
    return out


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = parse(text)

    def get(self, name, **labels):
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for n, lab, v in self.samples:
            if n == name and all(lab.get(k) == str(val)
                                 for k, val in labels.items()):
                total += v
        return total

    def series(self, name):
        return [lab for n, lab, _ in self.samples if n == name]


def scrape(n, path="/metrics"):
    r = requests.get(n.url(path), timeout=10)
    assert r.status_code == 200, r.text
    return Metrics(r.text)


def wait_metric(n, name, expected, **labels):
    """Polls until the metric reaches `expected` (the log phase runs after
    the response), returns the scrape."""
    last = {}

    def reached():
        m = scrape(n)
        last["m"] = m
        return m.get(name, **labels) >= expected and m
    try:
        return wait_for(reached, 15, "%s%s = %s" % (name, labels, expected))
    except TimeoutError:
        raise AssertionError("%s%s = %s, expected %s\n%s" % (
            name, labels, last["m"].get(name, **labels), expected,
            last["m"].text[:3000]))


def promtool(text):
    """Runs `promtool check metrics`; asserts no error and no warning."""
    p = subprocess.run(["promtool", "check", "metrics"], input=text,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "", \
        "promtool rc=%d: %s" % (p.returncode, p.stdout)
