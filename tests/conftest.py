"""Shared fixtures and collection order. GPU tests are marked `gpu` and skip where CUDA is absent.

`make test` runs the suite on every core (pytest-xdist, `--dist loadscope`: a module's tests share one
worker, so a module-scoped fixture such as a reference search is computed once). Modules with tests marked
`slow` are collected first — those made only of slow tests (whole searches) before the others — so that the
minute-long searches start at once on every worker and the quick tests fill the gaps at the end instead of
one worker finishing a long search alone.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest


def pytest_configure(config):
    # Machine-local caches (parsed COCO files) go to a folder of this session, not the user's: a test
    # must neither read what an earlier version stored nor leave files behind. Subprocesses inherit it.
    if not os.environ.get("AUTOLOSS_CACHE"):
        import tempfile

        os.environ["AUTOLOSS_CACHE"] = tempfile.mkdtemp(prefix="autoloss-test-cache-")
    # Under pytest-xdist each worker is one of `-n` processes sharing the cores; torch's default of one
    # intra-op thread per core would put two threads on every core and slow both workers down.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    tests, slow = Counter(_file(item) for item in items), Counter()
    for item in items:
        if "slow" in item.keywords:
            slow[_file(item)] += 1
    # Files whose tests are all slow (whole searches) first, then files with some slow tests; a stable
    # sort, so files otherwise keep their order and each file its tests' order.
    items.sort(key=lambda item: -slow[_file(item)] / tests[_file(item)])
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _file(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]
